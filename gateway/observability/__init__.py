"""Operations: structured JSON logs (``logs``) and Prometheus metrics (``metrics``), for every layer.

This package imports nothing of the gateway's layers, so any of them may use it. ``metrics`` is not imported
here: prometheus-client must see PROMETHEUS_MULTIPROC_DIR before its first import (see gunicorn_conf).
"""

from gateway.observability.logs import configure, redact_target, request_id_var, scrub

__all__ = ["configure", "redact_target", "request_id_var", "scrub"]
