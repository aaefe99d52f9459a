"""Airflow DAGs for scorer: a weekly fine-tune that promotes only a better model, and a daily
scoring run that always uses the current champion.

Copy this file into the Airflow dags folder; set the Airflow Variables (or edit the defaults):
scorer_home (a checkout where ./install.sh ran), scorer_registry, scorer_labeled, scorer_validation,
scorer_input and scorer_output.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta

from airflow.providers.standard.operators.bash import BashOperator
from airflow.providers.standard.operators.empty import EmptyOperator
from airflow.sdk import DAG, task

HOME = "{{ var.value.get('scorer_home', '/opt/scorer') }}"
REGISTRY = "{{ var.value.get('scorer_registry', '/data/models') }}"
DEFAULTS = {"retries": 2, "retry_delay": timedelta(minutes=10)}



def scorer_dag(dag_id: str, schedule: str) -> DAG:
    return DAG(dag_id=dag_id, schedule=schedule, start_date=datetime(2026, 1, 1), catchup=False,
               default_args=DEFAULTS, tags=["scorer"])


with scorer_dag("scorer_weekly_finetune", "@weekly") as finetune_dag:
    # A retried task resumes from its checkpoint: same arguments, same work directory.
    finetune = BashOperator(
        task_id="finetune",
        cwd=HOME,
        bash_command=(
            ".venv/bin/python -m jobs.finetune"
            " --train {{ var.value.get('scorer_labeled', '/data/labeled') }}"
            " --validation {{ var.value.get('scorer_validation', '/data/validation.parquet') }}"
            f" --base default --registry {REGISTRY} --name sentiment"
        ),
        do_xcom_push=True,  # the last stdout line: the job's JSON summary
        execution_timeout=timedelta(hours=6),
    )

    @task.branch
    def promoted_or_not(summary: str) -> str:
        return "promoted" if json.loads(summary)["promoted"] else "kept_champion"

    branch = promoted_or_not(finetune.output)
    branch >> [EmptyOperator(task_id="promoted"), EmptyOperator(task_id="kept_champion")]

with scorer_dag("scorer_daily_score", "@daily") as score_dag:
    # --overwrite makes a retry or a backfill replace that day's partition, never mix with it.
    BashOperator(
        task_id="score",
        cwd=HOME,
        bash_command=(
            ".venv/bin/scorer run {{ var.value.get('scorer_input', '/data/events') }}/dt={{ ds }}"
            " -o {{ var.value.get('scorer_output', '/data/scored') }}/dt={{ ds }} --overwrite"
            f" --model {REGISTRY}/sentiment@champion --log-format json"
        ),
        execution_timeout=timedelta(hours=2),
    )
