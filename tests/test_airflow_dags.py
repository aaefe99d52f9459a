"""The example Airflow DAGs load in Airflow's own DagBag (Airflow in its own environment)."""

import json
import os
import subprocess

from tests.conftest import REPO

AIRFLOW_PYTHON = REPO / ".venv-airflow" / "bin" / "python"
LOAD = """
import json
from airflow.dag_processing.dagbag import DagBag
bag = DagBag(dag_folder={folder!r})
print(json.dumps({{"errors": {{k: str(v) for k, v in bag.import_errors.items()}},
                   "dags": {{d: sorted(t.task_id for t in bag.dags[d].tasks) for d in bag.dag_ids}}}}))
"""


def test_dags_load_without_errors(tmp_path):
    assert AIRFLOW_PYTHON.exists(), "no .venv-airflow: ./install.sh test creates it"
    env = dict(os.environ, AIRFLOW_HOME=str(tmp_path), AIRFLOW__CORE__LOAD_EXAMPLES="False")
    proc = subprocess.run([str(AIRFLOW_PYTHON), "-c", LOAD.format(folder=str(REPO / "jobs" / "dags"))],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["errors"] == {}
    assert result["dags"] == {
        "scorer_weekly_finetune": ["finetune", "kept_champion", "promoted", "promoted_or_not"],
        "scorer_daily_score": ["score"]}
