# Sourced by bin/run-local and bin/test: a project-local Airflow (AIRFLOW_HOME under .local/).
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export AIRFLOW_HOME=${AIRFLOW_HOME:-$root/.local/airflow}
export AIRFLOW__CORE__DAGS_FOLDER=$root/dags
export AIRFLOW__CORE__PLUGINS_FOLDER=$root/plugins
export AIRFLOW__CORE__LOAD_EXAMPLES=False
export AIRFLOW__CORE__UNIT_TEST_MODE=False
export PYTHONPATH=$root${PYTHONPATH:+:$PYTHONPATH}
export PATH=$root/.venv/bin:$PATH
mkdir -p "$AIRFLOW_HOME"
