from ._artifacts import keep_model as keep_model
from ._artifacts import recover as recover
from ._finetune import EpochProgress as EpochProgress
from ._finetune import FinetuneCancelled as FinetuneCancelled
from ._finetune import FinetuneResult as FinetuneResult
from ._finetune import FinetuneSpec as FinetuneSpec
from ._finetune import run_finetune as run_finetune
from ._runner import JobRunner as JobRunner
