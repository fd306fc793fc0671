"""Whether the Hugging Face Hub answers, asked once and quickly.

Offline, huggingface_hub and datasets retry each request for tens of seconds before failing (and
print each retry). Callers ask here first and, without a hub, go straight to local copies
(`local_files_only`) or to their clear error.
"""

import functools
import os
import urllib.error
import urllib.request

PROBE_SECONDS = 5


@functools.cache
def hub_unreachable() -> str | None:
    """Why the hub cannot be used now (HF_HUB_OFFLINE set, or no answer from HF_ENDPOINT), or None."""
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"):
        return "HF_HUB_OFFLINE is set"
    endpoint = os.environ.get("HF_ENDPOINT") or "https://huggingface.co"
    try:  # urllib takes the same *_proxy settings as the hub libraries
        urllib.request.urlopen(urllib.request.Request(endpoint, method="HEAD"), timeout=PROBE_SECONDS).close()
    except urllib.error.HTTPError:
        return None  # it answered
    except (urllib.error.URLError, OSError) as exc:
        return f"{endpoint} does not answer: {getattr(exc, 'reason', exc)}"
    return None
