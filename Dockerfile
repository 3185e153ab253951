# micromine: one image for every role (docker-compose.yml picks the command).
# Build: docker build -t micromine .   (BuildKit, the default builder since Docker 23)

# ---- build: wheels for micromine and its dependencies ---------------------------------
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY micromine micromine
COPY protocol protocol
COPY common common
COPY broker broker
COPY device_agent device_agent
COPY ledger_node ledger_node
RUN pip wheel --no-cache-dir --wheel-dir /wheels '.[broker]'

# ---- runtime: the wheels installed, no compiler, no pip cache, not root ---------------
FROM python:3.11-slim
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
# The mount points exist and belong to micromine, so a new named volume mounted there
# takes that owner and the non-root processes can write their keys and databases.
RUN groupadd --system --gid 10001 micromine \
    && useradd --system --uid 10001 --gid micromine --home-dir /var/lib/micromine \
       --shell /usr/sbin/nologin micromine \
    && mkdir -p /var/lib/micromine /etc/micromine /srv/operator /srv/mosquitto \
       /srv/ledger-1 /srv/ledger-2 /srv/ledger-3 /srv/ledger-4 /srv/loadgen /srv/agent-keys \
    && chown -R micromine:micromine /var/lib/micromine /etc/micromine /srv
# The wheels come in through a bind mount of the build stage: they never become a layer.
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-cache-dir --no-index --find-links /wheels 'micromine[broker]' \
    && micromine --version
USER micromine
WORKDIR /var/lib/micromine
EXPOSE 1883 9001
CMD ["micromine", "--help"]
