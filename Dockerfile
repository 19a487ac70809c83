# Production image: gunicorn serving the app factory, as a non-root user.
# Configure clients and GATEWAY_DATABASE_URL before exposing it (see README "Running in a container").
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 \
    GATEWAY_INSTANCE_PATH=/var/lib/gateway

WORKDIR /app
COPY pyproject.toml README.md ./
COPY gateway ./gateway
COPY mappings ./mappings
COPY fixtures ./fixtures
RUN pip install . \
    && useradd --system --uid 10001 --home /app gateway \
    && mkdir -p /var/lib/gateway && chown gateway /var/lib/gateway

USER gateway
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=3s --retries=3 \
    CMD python -c "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=2).status == 200 else 1)"
# gateway/gunicorn_conf.py: bind 0.0.0.0:8080, and refuse to start without clients (development mode) unless
# GATEWAY_INSECURE_DEV=true, the same rule as `gateway serve`.
CMD ["gunicorn", "-c", "python:gateway.gunicorn_conf", "gateway.api.app:create_app()"]
