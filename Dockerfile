# The registrar as a Docker image, for deploy/marathon.json.
#
# Build it with `scripts/build-image` (= `python -m devcluster.image build`), which prepares the
# context this file expects and builds with `--network none`:
#   requirements.lock   the runtime lock file, every requirement pinned with its sha256
#   wheels/*.whl        the wheels of that lock plus the project's own, built on the host
#   pip/pip-*.whl       the installer, run from its wheel and never installed
# Nothing is downloaded during the build: pip checks every wheel against the lock's hashes.
#
# BASE: any image with Python 3.11 on PATH as python3, a shell and useradd. With a registry,
# the default python:3.11-slim; without one, `scripts/build-image` passes a base made from
# Debian's own packages (python3, ca-certificates, passwd).
ARG BASE=python:3.11-slim

# Stage 1: install into a venv. Thrown away except for /opt/registrar, so the installer, the
# wheels and the lock never reach the image.
FROM ${BASE} AS install
ARG VERSION
COPY requirements.lock /build/requirements.lock
COPY wheels/ /build/wheels/
COPY pip/ /build/pip/
# The project wheel named by VERSION must be there: the version label then tells the truth.
RUN set -eu; \
    test -n "${VERSION}" || { echo "build with --build-arg VERSION=<the project's version>" >&2; exit 1; }; \
    project=/build/wheels/marathon_consul_registrar-${VERSION}-py3-none-any.whl; \
    test -f "$project" || { echo "no $project in the context" >&2; exit 1; }; \
    python3 -m venv --without-pip /opt/registrar; \
    set -- /build/pip/pip-*.whl; installer="$1"; \
    pip() { /opt/registrar/bin/python "$installer/pip" "$@"; }; \
    pip install --no-index --find-links /build/wheels --no-cache-dir --disable-pip-version-check \
        --require-hashes -r /build/requirements.lock; \
    pip install --no-index --no-deps --no-cache-dir --disable-pip-version-check "$project"

# Stage 2: the base plus the venv. A base that brings its own pip (python:3.11-slim) loses it, so
# the image holds no installer whichever base it was built on.
FROM ${BASE}
ARG VERSION
LABEL org.opencontainers.image.title="marathon-consul-registrar" \
      org.opencontainers.image.description="Registers Marathon tasks' Weave overlay IPs in Consul" \
      org.opencontainers.image.version="${VERSION}"
RUN set -eu; \
    if python3 -c 'import pip' 2>/dev/null; then \
        PIP_BREAK_SYSTEM_PACKAGES=1 python3 -m pip uninstall --yes --quiet --disable-pip-version-check \
            pip setuptools wheel; \
    fi; \
    groupadd --system --gid 10001 registrar; \
    useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin registrar
COPY --from=install /opt/registrar /opt/registrar
ENV PATH=/opt/registrar/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
# Numeric, so that a runtime checking "runs as non-root" (runAsNonRoot) can tell without /etc/passwd.
USER 10001:10001
# SIGTERM is the clean shutdown (it unsubscribes the callback, README): say so whatever the base says.
STOPSIGNAL SIGTERM
# Marathon gives us $HOST and $PORT0: --listen and --callback-url default from them.
ENTRYPOINT ["marathon-consul-registrar"]
CMD ["serve"]
