"""llm-service: a gRPC gateway to LLM providers, built on LiteLLM."""

import os as _os

# LiteLLM fetches its model cost map, Anthropic beta-header table and other tables from
# GitHub (at import, or synchronously on a first call) unless told to use its bundled
# copies. A gateway must not let a remote file change what it sends, nor block on it.
# This must happen before anything imports litellm, and this package is imported first.
for _name in (
    "LITELLM_LOCAL_MODEL_COST_MAP",
    "LITELLM_LOCAL_ANTHROPIC_BETA_HEADERS",
    "LITELLM_LOCAL_POLICY_TEMPLATES",
    "LITELLM_LOCAL_AUTOROUTER_PRESETS",
    "LITELLM_LOCAL_BLOG_POSTS",
):
    _os.environ.setdefault(_name, "True")
# Nothing in the service downloads from the Hugging Face hub (tokenizers); fail fast if asked.
_os.environ.setdefault("HF_HUB_OFFLINE", "1")

__version__ = "0.1.0"
