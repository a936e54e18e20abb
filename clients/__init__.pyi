from ._client import AdaptorClient as AdaptorClient
from .demo import EXPERIENCE as EXPERIENCE
from .demo import StreamRow as StreamRow
from .demo import request_stream as request_stream
from .demo import run_stream as run_stream
from .demo import summarize as summarize
from .local_cluster import LocalCluster as LocalCluster
from .local_cluster import free_port as free_port
