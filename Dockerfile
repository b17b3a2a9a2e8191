# Worker image: the same package and CLI as the local install.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY pipeline ./pipeline
COPY jobs ./jobs
COPY schemas ./schemas
COPY sql ./sql
RUN pip install --no-cache-dir .
USER nobody
ENV WEB_HOST=0.0.0.0 DATA_DIR=/tmp/telemetry
EXPOSE 6066
ENTRYPOINT ["telemetry"]
CMD ["worker"]
