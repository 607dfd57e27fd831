# Apache Airflow 3.3.2 (official image) with airflow-provider-sagemaker-pipelines installed from this
# repository, with the `local` extra (the `sagemaker-pipelines-local` endpoint). Built by
# docker-compose.yaml (`docker compose build`); see docs/docker-compose.md.
#
# The provider is installed at build time, with the same exact pins as CI (constraints.txt, which also
# pins apache-airflow==3.3.2, so pip cannot move Airflow itself), not through _PIP_ADDITIONAL_REQUIREMENTS
# at every container start. Checked offline by tests/compose (FROM matches the pinned Airflow and Python,
# `-c constraints.txt`, `.[local]`, the `airflow` user).
FROM apache/airflow:3.3.2-python3.11

# The official image's convention: system changes as root, Python packages as the `airflow` user (the
# image's default user, uid 50000, group 0), never `pip install` as root.
USER root
RUN mkdir -p /opt/sagemaker-pipelines-provider \
    && chown airflow:0 /opt/sagemaker-pipelines-provider

USER airflow
WORKDIR /opt/sagemaker-pipelines-provider
# Only what the build needs (.dockerignore keeps everything else out of the context): the pins, the
# project metadata (README.md is its `readme`) and the package source.
COPY --chown=airflow:0 constraints.txt pyproject.toml README.md ./
COPY --chown=airflow:0 provider/ ./provider/
RUN pip install --no-cache-dir -c constraints.txt ".[local]"

# Back to the official image's working directory (AIRFLOW_HOME); the entrypoint is unchanged.
WORKDIR /opt/airflow
