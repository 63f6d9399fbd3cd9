"""llm-service: a gRPC gateway to LLM providers, built on LiteLLM."""

import os as _os

# LiteLLM fetches its model cost map from the internet at import unless told not to;
# this must happen before anything imports litellm, and this package is imported first.
_os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

__version__ = "0.1.0"
