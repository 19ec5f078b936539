# Airflow image with the project's pinned requirements (used by docker-compose.yaml).
FROM apache/airflow:3.3.2-python3.12
COPY --chown=airflow:root requirements.txt constraints.txt /opt/esg/
RUN pip install --no-cache-dir -r /opt/esg/requirements.txt -c /opt/esg/constraints.txt
ENV PYTHONPATH=/opt/airflow/project
