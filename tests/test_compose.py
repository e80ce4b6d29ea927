"""docker-compose.yml is validated statically (no Docker engine here): it parses and wires the stack."""
from __future__ import annotations

import re
from pathlib import Path

import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]


def _compose() -> dict:
    return yaml.safe_load((REPO_ROOT / "docker-compose.yml").read_text())


APP_SERVICES = ("migrate", "web", "worker", "classify-worker", "reconciler", "worker-gpu", "classify-worker-gpu", "flower")


def test_compose_names_the_services():
    services = _compose()["services"]
    assert {"redis", "postgres", "migrate", "web", "worker", "classify-worker", "reconciler"} <= set(services)


def test_app_services_share_env_wiring():
    services = _compose()["services"]
    for name in APP_SERVICES:
        env = services[name]["environment"]
        assert env["DATABASE_URL"].startswith("postgresql+psycopg://") and "@postgres:5432/" in env["DATABASE_URL"]
        assert env["REDIS_URL"] == "redis://redis:6379/0"
        assert env["MODEL_STORE"] == "sql"  # model files in PostgreSQL: no shared volume (issue 19)
        assert env["MODEL_CACHE_DIR"] == "/var/cache/bertqueue"
        assert services[name]["build"] == "."


def test_startup_order_and_commands():
    services = _compose()["services"]
    # migrations first, then the first admin (whose token is BERTQUEUE_ADMIN_TOKEN)
    assert services["migrate"]["command"] == ["sh", "-c", "alembic upgrade head && flask --app web bootstrap"]
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    for name in ("web", "worker", "classify-worker", "reconciler"):
        assert services[name]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
        assert services[name]["depends_on"]["redis"]["condition"] == "service_healthy"
        assert services[name]["restart"] == "unless-stopped"
    assert "worker.celery_app" in services["worker"]["command"]


def test_no_default_secrets():
    """SECRET_KEY, the admin token and the database password must come from the environment: `${VAR:?message}`
    makes compose refuse to start without them; no value of theirs is written in the file."""
    text = (REPO_ROOT / "docker-compose.yml").read_text()
    for var in ("SECRET_KEY", "BERTQUEUE_ADMIN_TOKEN", "POSTGRES_PASSWORD"):
        uses = re.findall(r"\$\{" + var + r"(:?[-?][^}]*)?\}", text)
        assert uses, var
        assert all(use.startswith(":?") for use in uses), (var, uses)  # required, never defaulted
    env = _compose()["services"]["web"]["environment"]
    assert env["SECRET_KEY"].startswith("${SECRET_KEY:?")
    assert env["BERTQUEUE_ADMIN_TOKEN"].startswith("${BERTQUEUE_ADMIN_TOKEN:?")
    assert "change-me" not in text


def test_web_is_published_on_localhost_unless_told_otherwise():
    assert _compose()["services"]["web"]["ports"] == ["${WEB_BIND:-127.0.0.1}:5000:5000"]
    for name, service in _compose()["services"].items():
        if name not in ("web", "flower"):
            assert "ports" not in service, name  # nothing else is published
    assert _compose()["services"]["flower"]["ports"] == ["${FLOWER_BIND:-127.0.0.1}:5555:5555"]


def test_reconciler_runs_as_its_own_process():
    """One reconciler process, the same module `make run` starts; no worker runs a beat schedule any more."""
    from scripts.run_stack import reconciler_command

    services = _compose()["services"]
    command = services["reconciler"]["command"]
    assert command[-2:] == reconciler_command()[-2:] == ["-m", "worker.reconciler"]
    # it loads no models; its sweep reconciles the stored model files with the model rows in PostgreSQL itself
    assert "volumes" not in services["reconciler"]
    for name in ("worker", "classify-worker"):
        assert "-B" not in services[name]["command"] and "--beat" not in services[name]["command"]


def test_worker_layout_matches_the_launcher():
    """Compose runs the same two workers as `make run`: prefork for training, a thread pool for the rest."""
    from scripts.run_stack import celery_worker_commands

    services = _compose()["services"]
    launcher = celery_worker_commands()
    for service, name in (("worker", "train"), ("classify-worker", "classify")):
        command = services[service]["command"]
        for flag in ("-Q", "--pool", "-n"):
            assert command[command.index(flag) + 1] == launcher[name][launcher[name].index(flag) + 1], (service, flag)
    assert "web:create_app()" in services["web"]["command"]


def test_volumes_for_postgres_and_no_shared_model_volume():
    """Model files live in PostgreSQL (MODEL_STORE=sql): no app service mounts a volume, so each can run on any
    host and be scaled (docker compose up --scale classify-worker=N) with a cache of its own."""
    compose = _compose()
    assert "postgres-data" in compose["volumes"] and "model-store" not in compose["volumes"]
    assert "postgres-data:/var/lib/postgresql/data" in compose["services"]["postgres"]["volumes"]
    for name in APP_SERVICES:
        assert "volumes" not in compose["services"][name], name


def test_dockerfile_installs_pinned_requirements():
    dockerfile = (REPO_ROOT / "Dockerfile").read_text()
    assert "pip install -r requirements.txt" in dockerfile
    assert "torch==2.13.0" in (REPO_ROOT / "requirements.txt").read_text()


GPU_SERVICES = {"worker-gpu": "train", "classify-worker-gpu": "classify"}


def test_gpu_profile_runs_one_worker_per_device_through_the_launcher():
    """`--profile gpu`: each GPU service reserves the NVIDIA devices and runs the launcher's --only mode, which
    starts one worker per device of GPUS with CUDA_VISIBLE_DEVICES set (tests/core/test_gpus.py)."""
    from scripts.run_stack import main  # noqa: F401  (the entry point the command names exists)

    services = _compose()["services"]
    for name, kind in GPU_SERVICES.items():
        service = services[name]
        assert service["profiles"] == ["gpu"], name
        assert service["command"] == ["python", "scripts/run_stack.py", "--only", kind]
        assert service["environment"]["GPUS"] == "${GPUS:-all}"
        assert service["environment"]["REDIS_URL"] == "redis://redis:6379/0"  # the shared app env, merged
        assert service["environment"]["DATABASE_URL"].startswith("postgresql+psycopg://")
        assert service["build"] == "."
        assert "volumes" not in service  # model files from PostgreSQL, like every app service
        assert service["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
        assert service["restart"] == "unless-stopped"
        devices = service["deploy"]["resources"]["reservations"]["devices"]
        assert devices == [{"driver": "nvidia", "count": "all", "capabilities": ["gpu"]}]
    assert services["worker-gpu"]["environment"]["WORKER_CONCURRENCY"] == "${TRAIN_SLOTS_PER_GPU:-1}"


def test_cpu_workers_can_be_scaled_to_zero_and_nothing_is_commented_out():
    services = _compose()["services"]
    for name in ("worker", "classify-worker"):
        assert services[name]["deploy"]["replicas"] == "${CPU_WORKERS:-1}"
        assert "profiles" not in services[name]  # a plain `up` still runs the CPU stack
    for name in ("web", "migrate", "reconciler", "redis", "postgres"):
        assert "profiles" not in services[name]
    text = (REPO_ROOT / "docker-compose.yml").read_text()
    # no service definition hidden in comments (issue 19): every "deploy:" / "devices:" line is live YAML
    assert not re.search(r"^\s*#\s*(deploy|resources|reservations|devices|- driver):", text, re.M)
    assert services["worker"]["environment"]["AMP"] == "${AMP:-auto}"


def test_flower_profile_is_optional_and_authenticated():
    from scripts.flower import check_basic_auth, flower_command

    flower = _compose()["services"]["flower"]
    assert flower["profiles"] == ["flower"]
    assert flower["command"] == ["python", "scripts/flower.py"]
    assert flower["environment"]["FLOWER_BASIC_AUTH"] == "${FLOWER_BASIC_AUTH:-}"  # checked by the script
    assert flower["environment"]["REDIS_URL"] == "redis://redis:6379/0"
    assert check_basic_auth(None) and check_basic_auth("") and check_basic_auth("admin:short")
    assert check_basic_auth("admin") and check_basic_auth(":" + "x" * 20)
    assert check_basic_auth("admin:" + "x" * 16) is None
    assert check_basic_auth("a:" + "x" * 16 + ",b:" + "y" * 20) is None
    command = flower_command()
    assert command[-4:-2] == ["worker.celery_app", "flower"] and "--port=5555" in command
    assert not any("basic" in part for part in command)  # the password stays out of the command line
    makefile = (REPO_ROOT / "Makefile").read_text()
    assert "\nflower: $(STAMP)\n\t$(PY) scripts/flower.py" in makefile


def test_web_threads_default_is_the_settings_one_everywhere():
    """WEB_THREADS is declared in core.config; compose and the Makefile start the web with the same default and hand
    it to the web, whose settings derive PREDICT_MAX_WAITERS from it."""
    from core.config import Settings

    default = Settings.web_threads
    web = _compose()["services"]["web"]
    threads = web["command"][web["command"].index("--threads") + 1]
    assert threads == web["environment"]["WEB_THREADS"] == f"${{WEB_THREADS:-{default}}}"
    assert f"export WEB_THREADS ?= {default}\n" in (REPO_ROOT / "Makefile").read_text()
    assert Settings.from_env({}).predict_max_waiters == Settings.predict_max_waiters == default - 4
    assert Settings.from_env({"WEB_THREADS": "10"}).predict_max_waiters == 6
    assert Settings.from_env({"WEB_THREADS": "10", "PREDICT_MAX_WAITERS": "3"}).predict_max_waiters == 3
