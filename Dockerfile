# The registrar as a Docker image, for deploy/marathon.json.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY service ./service
RUN pip install --no-cache-dir . && useradd --system --no-create-home registrar
USER registrar
# Marathon gives us $HOST and $PORT0: --listen and --callback-url default from them.
ENTRYPOINT ["marathon-consul-registrar"]
CMD ["serve"]
