"""`hcmbench ui` as a user runs it: a real process in a project folder, the URLs it prints, a stop signal to
its PID alone, and (marker `browser`) a headless Chromium on MLflow's UI after a small sweep.

The browser test needs Debian's `chromium` and `chromium-driver` and the `selenium` package (the `test`
extra); it is skipped without them, except in CI (`CI=true`, where .ci/run installs them), where it fails.
SLOW, measured on two busy cores: each test starts MLflow's server (11–13 s each, up to 30 s under heavy
load); the browser test also runs a two-trial sweep first (35–45 s in all).
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM, CHROMEDRIVER = "chromium", "chromedriver"
URL = re.compile(r"^(hcmbench-\S+): (http://127\.0\.0\.1:\d+/#/experiments/(\d+)/runs\?\S+)$", re.M)
SPACE = {
    "model": "dcgan",
    "objective": {"metric": "fid", "images": 8},
    "budget": {"epochs": 1, "pruner": "none"},
    "data": {"size": 32, "groups": ["HCM", "NOR"]},
    "train": {"batch_size": 8},
    "params": {"lr": {"low": 1.0e-4, "high": 1.0e-3, "log": True}, "width": {"choices": [4]},
               "latent_dim": {"choices": [8]}},
}


def user_environment(cache: Path) -> dict[str, str]:
    """A new shell's environment: nothing that points MLflow or hcmbench elsewhere; torch on one thread."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "HCMBENCH_DATA", "HCMBENCH_STORAGE")}
    env.update(HCMBENCH_CACHE=str(cache), OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    return env


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def port_is_free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def start_ui(project: Path, port: int) -> subprocess.Popen:
    """`hcmbench ui --port PORT` in `project`, as its own process (its stdout a pipe), once it serves."""
    ui = subprocess.Popen([sys.executable, "-m", "hcmbench", "ui", "--port", str(port)], cwd=project,
                          env=user_environment(project.parent / "cache"), stdout=subprocess.PIPE,
                          stderr=subprocess.DEVNULL, text=True)
    deadline = time.monotonic() + 180
    while not listening(port):
        assert ui.poll() is None, f"hcmbench ui exited with {ui.returncode}"
        assert time.monotonic() < deadline, "hcmbench ui did not listen within 180 s"
        time.sleep(0.3)
    return ui


def live_processes() -> dict[int, tuple[int, int]]:
    """{pid: (parent pid, process group)} of every process that is not a zombie."""
    found = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            state, ppid, pgrp = stat[stat.rindex(")") + 2:].split()[:3]
            if state not in ("Z", "X"):
                found[int(entry.name)] = (int(ppid), int(pgrp))
    return found


def descendants(pid: int) -> set[int]:
    processes, found, frontier = live_processes(), set(), {pid}
    while frontier:
        frontier = {child for child, (parent, _) in processes.items() if parent in frontier} - found
        found |= frontier
    return found


def read_lines(process: subprocess.Popen, count: int, timeout: float = 120) -> str:
    """Up to `count` lines of what `process` prints, waiting no longer than `timeout` seconds for them."""
    import selectors

    lines, deadline = [], time.monotonic() + timeout
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        while len(lines) < count and selector.select(max(0.0, deadline - time.monotonic())):
            line = process.stdout.readline()
            if not line:
                break
            lines.append(line)
    return "".join(lines)


def kill_leftovers(pids: set[int]) -> None:
    """SIGKILL to what a failing run of `hcmbench ui` left behind: those of `pids` that still run MLflow's
    server (checked, so that a number the system has given to another process since is left alone)."""
    for pid in pids:
        with contextlib.suppress(OSError):
            command = Path(f"/proc/{pid}/cmdline").read_bytes()
            if b"mlflow" in command or b"uvicorn" in command:
                os.kill(pid, signal.SIGKILL)


def stop_and_wait(process: subprocess.Popen, signum: int) -> int:
    process.send_signal(signum)
    try:
        return process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()
        raise AssertionError(f"hcmbench ui did not exit within 60 s of {signal.Signals(signum).name}") from None


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads the process table from /proc (Linux)")
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_stop_signal_to_ui_ends_every_process_it_started_and_frees_the_port(tmp_path, signum):
    project = tmp_path / "project"
    project.mkdir()
    port = free_port()
    ui = start_ui(project, port)
    children = descendants(ui.pid)
    try:
        processes = live_processes()
        groups = {processes[pid][1] for pid in children if pid in processes} - {os.getpgrp()}
        assert len(children) >= 2, "mlflow ui runs as several processes (the CLI, uvicorn and its workers)"
        status = stop_and_wait(ui, signum)  # sent to the PID alone, as `kill` does, not to its group
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            left = {pid: owner for pid, owner in live_processes().items() if pid in children or owner[1] in groups}
            if not left and port_is_free(port):
                break
            time.sleep(0.2)
        assert not left, f"processes left running after {signal.Signals(signum).name}: {sorted(left)}"
        assert port_is_free(port), f"port {port} is still taken"
        assert status == 0
    finally:
        if ui.poll() is None:
            ui.kill()
        kill_leftovers(children)


def test_ui_prints_the_runs_view_of_each_experiment_in_the_model_training_mode_and_opens_the_latest(tmp_path):
    """Each URL opens MLflow's model-training view (workflowType=machine_learning); a sweep's experiment opens
    in its saved view of the trials, sorted by their objective in the study's direction. `--open` opens the
    latest experiment's once the server answers, in the browser that $BROWSER names."""
    from mlflow import MlflowClient

    from hcmbench.tracking import save_trials_view

    project = tmp_path / "project"
    (project / "mlruns").mkdir(parents=True)
    client = MlflowClient(f"sqlite:///{project / 'mlruns' / 'mlflow.db'}")
    swept = client.create_experiment("hcmbench-vae")
    save_trials_view(client, swept, "maximize", ["precision", "recall"])
    client.set_terminated(client.create_run(swept).info.run_id)
    time.sleep(0.01)
    studied = client.create_experiment("hcmbench-study")
    client.set_terminated(client.create_run(studied).info.run_id)
    opened = tmp_path / "opened.txt"
    browser = tmp_path / "browser.py"  # a browser that writes down the URL it is asked to open
    browser.write_text(f"import sys, pathlib\npathlib.Path({str(opened)!r}).write_text(sys.argv[1])\n")
    port = free_port()
    ui = subprocess.Popen([sys.executable, "-m", "hcmbench", "ui", "--port", str(port), "--open"], cwd=project,
                          env={**user_environment(tmp_path / "cache"), "BROWSER": f"{sys.executable} {browser} %s"},
                          stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        printed = read_lines(ui, 2)  # printed before the server starts
        deadline = time.monotonic() + 180
        while not opened.exists() and time.monotonic() < deadline and ui.poll() is None:
            time.sleep(0.2)
        assert listening(port), "the browser was opened before the server answered"
    finally:
        children = descendants(ui.pid)
        stop_and_wait(ui, signal.SIGTERM)
        kill_leftovers(children)
    views = URL.findall(printed)
    assert [name for name, _, _ in views] == ["hcmbench-study", "hcmbench-vae"], printed  # the latest run first
    urls = {name: url for name, url, _ in views}
    address = f"http://127.0.0.1:{port}/#/experiments"
    assert urls["hcmbench-study"] == f"{address}/{studied}/runs?workflowType=machine_learning"
    assert urls["hcmbench-vae"] == f"{address}/{swept}/runs?workflowType=machine_learning&viewStateShareKey=hcmbench-trials"
    assert opened.read_text() == urls["hcmbench-study"]
    saved = json.loads(client.get_experiment(swept).tags["mlflow.sharedViewState.hcmbench-trials"])
    state = json.loads(saved["state"])
    assert saved["name"] == "hcmbench: trials by objective" and isinstance(saved["createdAt"], int)
    assert state["orderByKey"] == "metrics.`objective`" and state["orderByAsc"] is False
    assert state["selectedColumns"][:3] == ["metrics.`objective`", "metrics.`eval/precision`", "metrics.`eval/recall`"]


def test_ui_on_a_port_that_is_taken_says_so_in_one_line(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run([sys.executable, "-m", "hcmbench", "ui", "--port", str(port)], cwd=tmp_path,
                              env=user_environment(tmp_path / "cache"), capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert done.stderr == (f"error: port {port} on 127.0.0.1 is taken (another server, or a `hcmbench ui` still "
                           "running): pass --port\n")


# -- the browser -------------------------------------------------------------------------------------------


def require_browser() -> None:
    """Skip the test when Chromium, its driver or selenium is missing; fail it in CI, which must run it."""
    missing = [name for name in (CHROMIUM, CHROMEDRIVER) if shutil.which(name) is None]
    if importlib.util.find_spec("selenium") is None:
        missing.append("selenium")
    if missing:
        reason = (f"no {', '.join(missing)}: apt-get install -y chromium chromium-driver, and "
                  "pip install -e '.[test]' for selenium")
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI must run the browser test: {reason}")
        pytest.skip(reason)


def browser():
    """A headless Chromium driven by selenium."""
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    require_browser()
    options = Options()
    options.binary_location = shutil.which(CHROMIUM)
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--window-size=1600,1000"):
        options.add_argument(argument)
    return webdriver.Chrome(service=Service(shutil.which(CHROMEDRIVER)), options=options)


@pytest.fixture(scope="module")
def swept(split_phantom, tmp_path_factory) -> Path:
    """A project folder holding a finished two-trial dcgan sweep, made by `hcmbench sweep`."""
    require_browser()  # before the sweep
    project = tmp_path_factory.mktemp("user") / "project"
    project.mkdir()
    (project / "space.yaml").write_text(yaml.safe_dump(SPACE))
    done = subprocess.run([sys.executable, "-m", "hcmbench", "--quiet", "sweep", "--model", "dcgan", "--trials", "2",
                           "--space", "space.yaml", "--data", str(split_phantom)], cwd=project,
                          env=user_environment(project.parent / "cache"), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    return project


def wait_for(driver, condition, what: str, timeout: float = 90):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout, poll_frequency=0.25).until(condition, f"no {what} after {timeout} s")


def page_text(driver) -> str:
    from selenium.webdriver.common.by import By

    return driver.find_element(By.TAG_NAME, "body").text


def chart(driver, metric: str):
    """The chart card of `metric` in the chart view, once drawn (MLflow draws a card when it scrolls into view)."""
    from selenium.webdriver.common.by import By

    titles = driver.find_elements(By.CSS_SELECTOR, f"h4[title='{metric}']")
    return titles[0] if titles and titles[0].is_displayed() else False


def drawn(driver) -> bool:
    """Whether every chart card shown has been drawn (MLflow shows a spinner until a chart's data arrive)."""
    from selenium.webdriver.common.by import By

    cards = [title for title in driver.find_elements(By.CSS_SELECTOR, "h4[title]") if title.is_displayed()]
    plots = [plot for plot in driver.find_elements(By.CSS_SELECTOR, ".js-plotly-plot .main-svg") if plot.is_displayed()]
    return bool(plots) and len(plots) >= len(cards)


def in_first_sight(driver, element) -> bool:
    """Whether `element` lies in the window as the page opened, without scrolling."""
    return driver.execute_script("const r = arguments[0].getBoundingClientRect(); "
                                 "return r.top >= 0 && r.bottom <= window.innerHeight", element)


def close_assistant(driver) -> None:
    """Fold MLflow's assistant panel, which takes a third of the window (screenshots only)."""
    from selenium.webdriver.common.by import By

    for button in driver.find_elements(By.CSS_SELECTOR, "button[data-component-id='mlflow.assistant.chat_panel.close']"):
        button.click()


def search_charts(driver, text: str) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    box = driver.find_element(By.CSS_SELECTOR, "input[placeholder='Search metric charts']")
    box.send_keys(Keys.CONTROL, "a")  # clear() leaves React's own copy of the text as it was
    box.send_keys(Keys.DELETE, text)


@pytest.mark.browser
def test_chromium_finds_the_trials_their_figures_and_a_sample_grid_in_mlflow_ui(swept, tmp_path):
    """After a two-trial sweep, the URL that `hcmbench ui` prints opens MLflow's model-training view on the
    trials, named and side by side; the chart view opens on the study's progress; the study's run holds the
    best trial's figures; a trial's sample grid shows as an image. Screenshots under tmp_path/shots."""
    from mlflow import MlflowClient
    from selenium.webdriver.common.by import By

    client = MlflowClient(f"sqlite:///{swept / 'mlruns' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("hcmbench-dcgan").experiment_id
    runs = client.search_runs([experiment])
    parent, = [r for r in runs if r.data.tags["hcmbench.role"] == "study"]
    trials = sorted((r for r in runs if r.data.tags["hcmbench.role"] == "trial"), key=lambda r: r.info.run_name)
    assert [r.info.run_name for r in trials] == [f"trial {n} · fid {r.data.metrics['eval/fid']:.3g}"
                                                  for n, r in enumerate(trials)]
    best = min(trials, key=lambda r: r.data.metrics["objective"])
    assert parent.data.metrics["eval/fid"] == best.data.metrics["eval/fid"]
    assert [(m.step, m.value) for m in client.get_metric_history(parent.info.run_id, "study/objective")] == [
        (n, r.data.metrics["objective"]) for n, r in enumerate(trials)]
    shots = tmp_path / "shots"
    shots.mkdir()
    driver = browser()
    port = free_port()
    ui = start_ui(swept, port)
    try:
        url = dict((name, url) for name, url, _ in URL.findall(read_lines(ui, 1)))["hcmbench-dcgan"]
        # The runs view, as printed: the model-training view, every trial on a row of its own, by name, with
        # the objective and the evaluation figures as columns.
        driver.get(url)
        for trial in trials:
            wait_for(driver, lambda d: trial.info.run_name in page_text(d), f"row {trial.info.run_name!r}")
        for column in ("objective", "eval/fid", "eval/kid", "eval/precision"):
            wait_for(driver, lambda d: d.find_elements(By.XPATH, f"//*[@role='columnheader'][normalize-space()='{column}']"),
                     f"column {column}")
        assert "Judges" not in page_text(driver)  # the GenAI view's side bar
        close_assistant(driver)
        driver.save_screenshot(str(shots / "1-runs.png"))

        # The chart view opens on the study's progress (best so far per trial), then the figures of each run.
        driver.get(f"{url}&compareRunsMode=CHART")
        progress = wait_for(driver, lambda d: chart(d, "best/value"), "chart best/value")
        assert in_first_sight(driver, progress)
        wait_for(driver, drawn, "the drawing of chart best/value")
        close_assistant(driver)
        driver.save_screenshot(str(shots / "2-charts.png"))
        for metric in ("study/objective", "eval/fid"):
            search_charts(driver, metric)
            wait_for(driver, lambda d: chart(d, metric), f"chart {metric}")
            wait_for(driver, drawn, f"the drawing of chart {metric}")
            driver.save_screenshot(str(shots / f"3-chart-{metric.replace('/', '-')}.png"))

        # The study's run carries the best trial's evaluation figures.
        driver.get(f"http://127.0.0.1:{port}/#/experiments/{experiment}/runs/{parent.info.run_id}"
                   "?workflowType=machine_learning")
        for figure in ("eval/fid", "eval/kid", "best/value", "study/objective"):
            wait_for(driver, lambda d: figure in page_text(d), f"metric {figure} on the study's run")
        close_assistant(driver)
        driver.save_screenshot(str(shots / "4-study-run.png"))

        # A trial's sample grid, an artifact, shown as an image (MLflow fetches it and shows it from a blob: URL).
        grid = client.list_artifacts(best.info.run_id, "samples")[0].path
        width = Image.open(client.download_artifacts(best.info.run_id, grid, str(tmp_path))).width
        driver.get(f"http://127.0.0.1:{port}/#/experiments/{experiment}/runs/{best.info.run_id}/artifacts/{grid}"
                   "?workflowType=machine_learning")
        image = wait_for(driver, lambda d: next((img for img in d.find_elements(By.TAG_NAME, "img")
                                                 if d.execute_script("return arguments[0].naturalWidth", img) == width),
                                                False), f"image of {grid}, {width} px wide")
        assert image.is_displayed() and grid in page_text(driver)
        close_assistant(driver)
        driver.save_screenshot(str(shots / "5-artifact.png"))
    finally:
        driver.quit()
        if ui.poll() is None:
            stop_and_wait(ui, signal.SIGTERM)
