"""The contracts every part of NASOA shares: the bottom layer, importing only the wire stubs.

- domain types (:class:`TaskSpec`, :class:`Candidate`, :class:`Plan`, :class:`Job`, ...) and
  their proto conversion (:mod:`nasoa_contracts.convert`);
- the errors and their gRPC status codes, both ways;
- task and queue naming, the broker's transport options;
- channel, auth and TLS helpers;
- typed settings, one class per component.
"""

import lazy_loader

__getattr__, __dir__, __all__ = lazy_loader.attach_stub(__name__, __file__)
