"""bench/h200/h200_env.sh's data settings (the part that needs no GPU machine): which carried shards a call trains
on and where their prepared data goes; the settings must load as golf params."""

import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from golf.config import load_params

ROOT = Path(__file__).resolve().parents[1]


def _data_sets(train_shards: str | None) -> list[str]:
    env = {"PATH": "/usr/bin:/bin", "GOLF_ENV_DATA_ONLY": "1"}
    if train_shards is not None:
        env["TRAIN_SHARDS"] = train_shards
    script = 'source bench/h200/h200_env.sh && printf "%s\\n" "${GOLF_DATA_SETS[@]}"'
    out = subprocess.run(["bash", "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    return out.stdout.splitlines()


def test_all_four_shards_by_default():
    sets = _data_sets(None)
    assert sets[0] == "data.name=sp1024"
    assert sets[1] == "data.train_globs=[" + ",".join(f".carry/corpus/train_00{i}.jsonl.xz" for i in range(4)) + "]"
    params = load_params(ROOT / "configs/hybrid_12_b131k.yaml", sets)
    assert params.data.name == "sp1024" and len(params.data.train_globs) == 4
    assert params.data.val_globs == [".carry/corpus/val.jsonl.xz"]


@pytest.mark.parametrize("shards, name", [("000", "sp1024_000"), ("000 002", "sp1024_000_002")])
def test_a_subset_of_shards_gets_its_own_data_folder(shards, name):
    sets = _data_sets(shards)
    params = load_params(ROOT / "configs/hybrid_12_b131k.yaml", sets)
    assert params.data.name == name  # never data/sp1024, the full set's folder
    assert params.data.train_globs == [f".carry/corpus/train_{s}.jsonl.xz" for s in shards.split()]


def _lever_variants(part: str, tmp_path: Path, **side_sets: str) -> list[str]:
    """bench/h200/lever_pairs.sh's variants for PART, as it hands them to the sweep (a stub printing its
    arguments stands in for h200_train_sweep.sh); side_sets: HYBRID_SETS / ATTN_SETS, GPUS."""
    stub = tmp_path / "sweep.sh"
    stub.write_text('printf "%s\\n" "GPUS=$GPUS" "$@"\n')
    env = {"PATH": "/usr/bin:/bin", "PART": part, "SWEEP": str(stub), **side_sets}
    out = subprocess.run(["bash", "bench/h200/lever_pairs.sh"], cwd=ROOT, env=env, capture_output=True, text=True,
                         check=False)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == f"GPUS={side_sets.get('GPUS', 2)}"
    return lines[1:]


def test_lever_pairs_put_the_hybrid_on_gpu_0_and_attention_on_gpu_1_with_valid_settings(tmp_path):
    every = _lever_variants("all", tmp_path)
    parts = [_lever_variants(str(k), tmp_path) for k in range(1, 9)]
    assert [len(p) for p in parts] == [6] * 8 and [v for p in parts for v in p] == every  # 8 slices
    assert len(set(every)) == len(every)  # each run its own label, so its own runs_sweep/<label> folder
    for i, variant in enumerate(every):
        words = variant.split()
        assert words[0] == ("config=configs/hybrid_seed_fit.yaml" if i % 2 == 0 else "config=configs/attn_fit.yaml")
        params = load_params(ROOT / words[0].removeprefix("config="), words[1:])  # each override is a real setting
        assert ("M" in params.model.layer_pattern) == (i % 2 == 0)
    assert every[:2] == ["config=configs/hybrid_seed_fit.yaml", "config=configs/attn_fit.yaml"]  # the bases first
    assert _lever_variants("1,7", tmp_path) == parts[0] + parts[6]  # a list of parts, in its order
    assert _lever_variants("1", tmp_path, GPUS="1") == parts[0]  # one GPU: the same runs, in turn
    for part in ("9", "1,9", "2-3", "0", "x"):
        bad = subprocess.run(["bash", "bench/h200/lever_pairs.sh"], cwd=ROOT, capture_output=True, text=True,
                             check=False, env={"PATH": "/usr/bin:/bin", "PART": part, "SWEEP": "/bin/false"})
        assert bad.returncode == 2
        assert f"PART must be 1 to 8, a comma-separated list of them, or all, not '{part}'" in bad.stderr


def test_lever_pairs_take_their_pairs_from_pairs_file(tmp_path):
    """PAIRS_FILE=bench/h200/pairs_mamba_mlp.txt with the tuned configs as the sides: its 10 pairs in 4 parts, the
    base first, every override a real setting of its side's config; a missing file or one without pair lines
    is refused with one line naming it."""
    env = {"PAIRS_FILE": "bench/h200/pairs_mamba_mlp.txt", "HYBRID": "configs/hybrid_mlp_tuned_fit.yaml",
           "ATTN": "configs/attn_tuned_fit.yaml"}
    every = _lever_variants("all", tmp_path, **env)
    assert len(every) == 20 and [v for k in (1, 2, 3, 4) for v in _lever_variants(str(k), tmp_path, **env)] == every
    assert every[:2] == ["config=configs/hybrid_mlp_tuned_fit.yaml", "config=configs/attn_tuned_fit.yaml"]
    for variant in every:
        words = variant.split()
        load_params(ROOT / words[0].removeprefix("config="), words[1:])
    assert every[2].split()[1:] == ["model.layer_pattern=MMMAMMMAMMA", "model.mamba_mlp_mult=2.0"]
    empty = tmp_path / "empty.txt"
    empty.write_text("# no pairs here\n")
    for path, message in ((tmp_path / "none.txt", "error: PAIRS_FILE must be a file of pair lines, not "),
                          (empty, f"error: PAIRS_FILE '{empty}' holds no pair lines")):
        bad = subprocess.run(["bash", "bench/h200/lever_pairs.sh"], cwd=ROOT, capture_output=True, text=True,
                             check=False, env={"PATH": "/usr/bin:/bin", "PART": "1", "SWEEP": "/bin/false",
                                               "PAIRS_FILE": str(path)})
        assert bad.returncode == 2 and bad.stderr.startswith(message) and bad.stderr.count("\n") == 1


@pytest.mark.parametrize("env, message", [
    ({"PER_GPU": "2"}, "PER_GPU=2 shares each GPU between runs, which changes what a 90-s budget buys"),
    ({"PER_GPU": "2", "WALL": "240"}, "what a 240-s budget buys: use it only with WALL=0"),
    ({"PER_GPU": "two", "WALL": "0"}, "PER_GPU must be a positive whole number of runs per GPU, not 'two'"),
    ({"PER_GPU": "0", "WALL": "0"}, "PER_GPU must be a positive whole number"),
])
def test_train_sweep_shares_a_gpu_only_between_fixed_step_runs(env, message):
    """h200_train_sweep.sh refuses PER_GPU > 1 under a wall-clock budget before it touches the machine."""
    res = subprocess.run(["bash", "bench/h200/h200_train_sweep.sh", "train.max_steps=480"], cwd=ROOT,
                         env={"PATH": "/usr/bin:/bin", **env}, capture_output=True, text=True, check=False)
    assert res.returncode == 2 and message in res.stderr and res.stderr.count("\n") == 1


def test_lever_pairs_fixed_step_runs_give_each_side_its_own_settings(tmp_path):
    """HYBRID_SETS / ATTN_SETS reach every run of their side, before the lever's own overrides, as real settings
    (the fixed-step protocol: each side's step count, no wall-clock budget)."""
    plain = _lever_variants("2", tmp_path)
    fixed = _lever_variants("2", tmp_path, HYBRID_SETS="train.max_steps=480",
                            ATTN_SETS="train.max_steps=620 train.log_every=20")
    assert len(fixed) == len(plain) == 6
    for i, (p, f) in enumerate(zip(plain, fixed)):
        cfg, *lever = p.split()
        extra = ["train.max_steps=480"] if i % 2 == 0 else ["train.max_steps=620", "train.log_every=20"]
        assert f.split() == [cfg, *extra, *lever]
        params = load_params(ROOT / cfg.removeprefix("config="), [*extra, *lever, "train.wallclock_s=0"])
        assert params.train.max_steps == (480 if i % 2 == 0 else 620) and params.train.wallclock_s == 0
    # part 8's batch pair trains the bases' tokens at half the batch: its step counts follow the side's own
    equal_tokens = _lever_variants("8", tmp_path, HYBRID_SETS="train.max_steps=480", ATTN_SETS="train.max_steps=620")
    for i, variant in enumerate(equal_tokens[:2]):
        cfg, *sets = variant.split()
        params = load_params(ROOT / cfg.removeprefix("config="), [*sets, "train.wallclock_s=0"])
        assert params.train.batch_tokens == 65536 and params.train.max_steps == (960 if i == 0 else 1240)


def test_compare_call_passes_the_settings_and_packs_each_sides_newest_seed(tmp_path):
    """bench/h200/compare_call.sh with a stub `golf` that writes what compare would: both sides get the data sets,
    the budget and EXTRA_SETS; each side's seed comes back as run_<side>_<seed>.tgz laid out as save_run.py reads
    it (runs/<seed>/...)."""
    (tmp_path / "bench" / "h200").mkdir(parents=True)
    for name in ("compare_call.sh", "h200_env.sh"):
        shutil.copy(ROOT / "bench" / "h200" / name, tmp_path / "bench" / "h200" / name)
    stub_bin = tmp_path / "bin"
    stub_bin.mkdir()
    (stub_bin / "golf").write_text(
        '#!/usr/bin/env bash\nprintf "%s\\n" "$@" > args.txt\n'
        'for side in hybrid_seed_fit attn_fit; do for seed in 42 1337; do d=compare/t/runs/$side/$seed\n'
        '  mkdir -p $d/metrics $d/plots $d/artifact $d/train $d/logs\n'
        '  echo "{}" > $d/metrics/eval_ttt.json; echo x > $d/artifact/model.golf.xz; echo "{}" > $d/train/provenance.json\n'
        '  sleep 0.05; done; done\n')
    (stub_bin / "golf").chmod(0o755)
    out = tmp_path / "out"
    out.mkdir()
    env = {"PATH": f"{stub_bin}:/usr/bin:/bin", "GOLF_ENV_DATA_ONLY": "1", "OUT": str(out), "CMP": "compare/t",
           "SEEDS": "2", "EXTRA_SETS": "model.ssm_scan=golf train.seq_len=1024"}
    res = subprocess.run(["bash", "bench/h200/compare_call.sh"], cwd=tmp_path, env=env, capture_output=True,
                         text=True, check=False)
    assert res.returncode == 0, res.stderr
    args = (tmp_path / "args.txt").read_text().splitlines()
    assert args[:7] == ["compare", "configs/hybrid_seed_fit.yaml", "configs/attn_fit.yaml", "--seeds", "2", "--out",
                        "compare/t"]
    assert "train.wallclock_s=240" in args and "--set=data.name=sp1024" in args
    assert args[-4:] == ["--set", "model.ssm_scan=golf", "--set", "train.seq_len=1024"]
    for side in ("hybrid_seed_fit", "attn_fit"):  # seed 1337's metrics were written last: the newest
        assert not (out / f"run_{side}_42.tgz").exists()
        with tarfile.open(out / f"run_{side}_1337.tgz") as tar:
            names = set(tar.getnames())
        assert {"runs/1337/metrics/eval_ttt.json", "runs/1337/artifact/model.golf.xz",
                "runs/1337/train/provenance.json"} <= names
        assert not any(n.startswith("runs/42") or "compare/" in n for n in names)


def _kernels_call(tmp_path, py_body: str, env: dict | None = None, stub_timeout: bool = True):
    """bench/h200/kernels_call.sh with stubs for python3 (py_body, after a line recording the call) and the sweep,
    and for timeout (recording its arguments, then running the command) unless stub_timeout is False; returns
    (the finished process, the recorded calls, $OUT)."""
    calls = tmp_path / "calls.txt"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    py = bin_dir / "py"
    py.write_text('#!/usr/bin/env bash\necho "GPU $CUDA_VISIBLE_DEVICES: python $*" >> ' + str(calls) + "\n" + py_body)
    sweep = tmp_path / "sweep.sh"
    sweep.write_text('echo "GPU $CUDA_VISIBLE_DEVICES: sweep $CONFIG $*" >> ' + str(calls) + "\n"
                     'echo "GPU $CUDA_VISIBLE_DEVICES: sweep OUT $OUT" >> ' + str(calls) + "\n"
                     'printf "[%s]" "$@" > ' + str(tmp_path) + '/sweep_args_gpu$CUDA_VISIBLE_DEVICES.txt\n'
                     "echo \"variant 'model.ssm_scan=golf_split': exit code 1; the last 25 lines of its output:\"\n"
                     'echo "  | RuntimeError: boom"\necho "hybrid_seed_fit: 139 ms/step"\n')
    if stub_timeout:
        (bin_dir / "timeout").write_text(
            '#!/usr/bin/env bash\necho "timeout $*" >> ' + str(calls) + "\n"
            'while [[ $1 == -* ]]; do case $1 in -s|-k) shift 2;; *) shift;; esac; done\nshift\nexec "$@"\n')
    for f in bin_dir.iterdir():
        f.chmod(0o755)
    out = tmp_path / "out"
    out.mkdir()
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "OUT": str(out), "PYTHON": str(py), "SWEEP": str(sweep), **(env or {})}
    res = subprocess.run(["bash", "bench/h200/kernels_call.sh"], cwd=ROOT, env=env, capture_output=True, text=True,
                         check=False)
    return res, (calls.read_text().splitlines() if calls.exists() else []), out


def test_kernels_call_runs_tests_on_gpu_0_and_the_step_on_gpu_1(tmp_path):
    """bench/h200/kernels_call.sh with stubs: each command in its lane's GPU, the named outputs in $OUT; GPU 0
    runs the first tests (the padded mixer compiled with fullgraph) in one pytest run under timeout -s INT with
    --tb=short and prints the counts of its verbose log, then the step of attn_fit, attn_tuned_fit and
    hybrid_mlp_tuned_fit; GPU 1 runs hybrid_seed_fit's step as it is, with the opaque SSM ops and with CUDA
    graphs. Each sweep writes into its own folder of $OUT (two sweeps at once must not pack each other's JSONs);
    the failing variants' lines and each variant's summary line are printed. The long kernel test run is off
    unless TEST_TIMEOUT is set."""
    res, lines, out = _kernels_call(tmp_path, (
        'if [ "$2" = pytest ]; then printf "%s\\n" "t.py::a PASSED" "t.py::b FAILED"; fi\n'))
    assert res.returncode == 0, res.stderr
    assert "first tests: exit 0 (1 passed, 1 failed, 0 skipped)" in res.stdout
    assert "kernel tests" not in res.stdout
    assert "gpu0 step sweep: exit 0" in res.stdout and "gpu1 step sweep: exit 0" in res.stdout
    assert res.stdout.count("variant 'model.ssm_scan=golf_split': exit code 1; the last 25 lines of its output:") == 2
    assert res.stdout.count("hybrid_seed_fit: 139 ms/step") == 2
    gpu0 = [x for x in lines if x.startswith("GPU 0:")]
    gpu1 = [x for x in lines if x.startswith("GPU 1:")]
    graphs = "tests/test_ssm_opaque.py::test_opaque_model_under_cuda_graphs_matches_eager_on_gpu"
    split = "tests/test_ssm_golf_scan.py::test_golf_split_mixer_compiled_matches_reference_on_gpu"
    mixer = "tests/test_ssm_opaque.py::test_opaque_mixer_matches_reference_on_gpu"
    assert len(gpu0) == 3
    assert gpu0[0] == f"GPU 0: python -m pytest -rf -v --tb=short {graphs} {split} {mixer}"
    assert gpu0[1:] == [("GPU 0: sweep configs/attn_fit.yaml  config=configs/attn_tuned_fit.yaml "
                        "config=configs/hybrid_mlp_tuned_fit.yaml"), f"GPU 0: sweep OUT {out / 'gpu0'}"]
    assert [x.split()[:5] for x in lines if x.startswith("timeout") and " -m pytest " in x] == [
        ["timeout", "-s", "INT", "-k", "30"]]
    assert gpu1 == [("GPU 1: sweep configs/hybrid_seed_fit.yaml  model.ssm_compile=opaque "
                    "train.compile_mode=reduce-overhead"), f"GPU 1: sweep OUT {out / 'gpu1'}"]
    assert (out / "step_gpu0.log").is_file() and (out / "step_gpu1.log").is_file()
    assert (out / "pytest.log").read_text().splitlines() == ["t.py::a PASSED", "t.py::b FAILED"]


def test_kernels_call_lanes_take_their_config_and_variants_from_the_environment(tmp_path):
    """GPU0_CONFIG / GPU1_VARIANTS and the like replace a lane's sweep: "base" is the config as it is (an empty
    variant), and commas join one variant's overrides into one sweep argument."""
    res, lines, _ = _kernels_call(tmp_path, "", env={
        "GPU0_CONFIG": "configs/hybrid_mlp_tuned_fit.yaml", "GPU0_VARIANTS": "base model.ssm_compile=opaque",
        "GPU1_VARIANTS": "model.ssm_compile=opaque,train.inductor_options=[a=1] config=configs/attn_tuned_fit.yaml"})
    assert res.returncode == 0, res.stderr
    assert "GPU 0: sweep configs/hybrid_mlp_tuned_fit.yaml  model.ssm_compile=opaque" in lines
    assert (tmp_path / "sweep_args_gpu0.txt").read_text() == "[][model.ssm_compile=opaque]"
    assert (tmp_path / "sweep_args_gpu1.txt").read_text() == (
        "[model.ssm_compile=opaque train.inductor_options=[a=1]][config=configs/attn_tuned_fit.yaml]")


def test_kernels_call_keeps_the_first_tests_when_the_long_run_is_cut_off(tmp_path):
    """With TEST_TIMEOUT set, the kernel test files run after the first tests, without them (--deselect). With
    the real timeout: the long run past TEST_TIMEOUT gets SIGINT (pytest then prints the failures so far; the
    stub prints a line), its lines before and after that stay in pytest.log, its exit code is timeout's 124,
    and the first run's outcome is there in full."""
    res, lines, out = _kernels_call(tmp_path, (
        'if [ "$2" = pytest ]; then case "$*" in\n'
        '  *--deselect*) trap \'kill $!; echo "interrupted: 1 failed so far"; exit 2\' INT\n'
        '    echo "t.py::c FAILED"; sleep 20 > /dev/null 2>&1 & wait $!;;\n'
        '  *) printf "%s\\n" "t.py::a PASSED" "t.py::b FAILED";;\n'
        "esac; fi\n"), env={"TEST_TIMEOUT": "1"}, stub_timeout=False)
    assert res.returncode == 0, res.stderr
    assert "first tests: exit 0 (1 passed, 1 failed, 0 skipped)" in res.stdout
    assert "kernel tests: exit 124 (0 passed, 1 failed, 0 skipped)" in res.stdout
    long_run = [x for x in lines if x.startswith("GPU 0: python") and "--deselect" in x]
    assert len(long_run) == 1 and long_run[0].split()[8] == "tests/test_ssd_kernel.py"
    assert "--deselect=tests/test_ssm_golf_scan.py::test_golf_split_mixer_compiled_matches_reference_on_gpu" \
        in long_run[0].split()
    log = (out / "pytest.log").read_text().splitlines()
    assert log == ["t.py::a PASSED", "t.py::b FAILED", "t.py::c FAILED", "interrupted: 1 failed so far"]


def test_throughput_sweep_prints_a_failing_variants_last_lines(tmp_path):
    """bench/h200/h200_throughput_sweep.sh with a stub python3: a variant that succeeds prints its last line
    alone; one that fails prints its exit code and the last FAIL_TAIL lines of its output, stderr included (the
    traceback); one that runs past PER_VARIANT_TIMEOUT says so, with what it printed before; the sweep goes on
    after each."""
    stub = tmp_path / "bin"
    stub.mkdir()
    (stub / "python3").write_text(
        '#!/usr/bin/env bash\n'
        'if [ "$1" = -c ]; then case "$2" in *causal_conv1d*) echo 1;; esac; exit 0; fi\n'  # h200_env.sh's probes
        'case "$*" in\n'
        '  *golf_split*) for i in $(seq 1 40); do echo "step log $i"; done\n'
        '    echo "Traceback (most recent call last):" >&2; echo "RuntimeError: boom" >&2; echo; exit 1;;\n'
        '  *slow*) echo "compiling"; sleep 5; echo never;;\n'
        '  *) echo "warming up"; echo \'{"label": "fine"}\';;\n'
        'esac\n')
    (stub / "python3").chmod(0o755)
    env = {"PATH": f"{stub}:/usr/bin:/bin", "PER_VARIANT_TIMEOUT": "1"}
    res = subprocess.run(["bash", "bench/h200/h200_throughput_sweep.sh", "", "model.ssm_scan=golf_split",
                          "train.slow=1", "model.ssm_conv=golf"], cwd=ROOT, env=env, capture_output=True, text=True,
                         check=False)
    assert res.returncode == 0, res.stderr
    out = res.stdout.splitlines()
    assert out[0] == '{"label": "fine"}'  # the success line alone (h200_env.sh's own lines go to /dev/null)
    assert out.count('{"label": "fine"}') == 2 and "warming up" not in res.stdout
    head = out.index("variant 'model.ssm_scan=golf_split': exit code 1; the last 25 lines of its output:")
    tail = out[head + 1:head + 26]
    assert tail[0] == "  | step log 19" and tail[-3:] == ["  | Traceback (most recent call last):",
                                                           "  | RuntimeError: boom", "  | "]
    assert "step log 18" not in res.stdout
    slow = out.index("variant 'train.slow=1': exit code 124 (ran past PER_VARIANT_TIMEOUT=1 s); the last 25 lines "
                     "of its output:")
    assert out[slow + 1:slow + 3] == ["  | compiling", '{"label": "fine"}']
    short = subprocess.run(["bash", "bench/h200/h200_throughput_sweep.sh", "model.ssm_scan=golf_split"], cwd=ROOT,
                           env=env | {"FAIL_TAIL": "3"}, capture_output=True, text=True, check=False)
    assert short.stdout.splitlines()[-4:] == [
        "variant 'model.ssm_scan=golf_split': exit code 1; the last 3 lines of its output:",
        "  | Traceback (most recent call last):", "  | RuntimeError: boom", "  | "]


def test_throughput_sweep_labels_a_repeated_variant_apart(tmp_path):
    """Alternating sides in one call ("" "x" "" "x"): each run of a variant gets its own label, hence its own JSON
    (train_throughput.py names the file after the label), rather than the last run overwriting the others."""
    stub = tmp_path / "bin"
    stub.mkdir()
    (stub / "python3").write_text(
        '#!/usr/bin/env bash\n'
        'if [ "$1" = -c ]; then case "$2" in *causal_conv1d*) echo 1;; esac; exit 0; fi\n'
        'while [ $# -gt 0 ]; do [ "$1" = --label ] && echo "label $2"; shift; done\n')
    (stub / "python3").chmod(0o755)
    res = subprocess.run(["bash", "bench/h200/h200_throughput_sweep.sh", "", "model.ssm_scan=mamba_keep_dA", "",
                          "model.ssm_scan=mamba_keep_dA", ""], cwd=ROOT, env={"PATH": f"{stub}:/usr/bin:/bin"},
                         capture_output=True, text=True, check=False)
    assert res.returncode == 0, res.stderr
    base, dA = "hybrid_12", "hybrid_12__model.ssm_scan=mamba_keep_dA"
    assert res.stdout.splitlines() == [f"label {base}", f"label {dA}", f"label {base}__run2", f"label {dA}__run2",
                                       f"label {base}__run3"]


def test_throughput_sweep_sets_an_env_word_for_its_variant_alone(tmp_path):
    """An env=NAME=value word reaches that variant's process and no other; a malformed one is skipped with its one
    line and the sweep goes on."""
    stub = tmp_path / "bin"
    stub.mkdir()
    (stub / "python3").write_text(
        '#!/usr/bin/env bash\n'
        'if [ "$1" = -c ]; then case "$2" in *causal_conv1d*) echo 1;; esac; exit 0; fi\n'
        'echo "workspace=${CUBLASLT_WORKSPACE_SIZE:-unset}"\n')
    (stub / "python3").chmod(0o755)
    res = subprocess.run(["bash", "bench/h200/h200_throughput_sweep.sh", "", "env=CUBLASLT_WORKSPACE_SIZE=0", "env=1",
                          ""], cwd=ROOT, env={"PATH": f"{stub}:/usr/bin:/bin"}, capture_output=True, text=True,
                         check=False)
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines() == ["workspace=unset", "workspace=0", "workspace=unset"]
    assert res.stderr.strip() == "variant word 'env=1': expected env=<NAME>=<value>"


def test_kernels_call_with_one_gpu_runs_the_lanes_in_turn_on_gpu_0(tmp_path):
    """GPUS=1 (a one-GPU machine): the step lane runs after the test lane, on GPU 0, into its own folder;
    GPU1_VARIANTS=none leaves that lane without a sweep; a GPUS other than 1 or 2 is one clear error before anything
    runs."""
    res, lines, out = _kernels_call(tmp_path, "", env={"GPUS": "1"})
    assert res.returncode == 0, res.stderr
    assert not [x for x in lines if x.startswith("GPU 1:")]
    sweeps = [x for x in lines if x.startswith("GPU 0: sweep OUT")]
    assert sweeps == [f"GPU 0: sweep OUT {out / 'gpu0'}", f"GPU 0: sweep OUT {out / 'gpu1'}"]
    gpu0 = [x for x in lines if x.startswith("GPU 0:")]
    assert gpu0[0].startswith("GPU 0: python -m pytest") and gpu0.index(sweeps[0]) < gpu0.index(sweeps[1])
    none = tmp_path / "none"
    none.mkdir()
    res, lines, _ = _kernels_call(none, "", env={"GPUS": "1", "GPU1_VARIANTS": "none"})
    assert res.returncode == 0, res.stderr
    assert "gpu1 step sweep: none" in res.stdout
    assert [x for x in lines if " sweep OUT " in x] == [f"GPU 0: sweep OUT {none / 'out' / 'gpu0'}"]
    bad = tmp_path / "bad"
    bad.mkdir()
    res, lines, _ = _kernels_call(bad, "", env={"GPUS": "3"})
    assert res.returncode == 2 and lines == []
    assert res.stderr.strip() == "error: GPUS must be 1 (the lanes in turn on GPU 0) or 2 (one lane a GPU), not '3'"


def _parse_variant(variant: str) -> list[str]:
    """bench/h200/h200_env.sh's parse_variant alone (the file's top needs the GPU machine's carried wheels)."""
    script = (f"eval \"$(sed -n '/^parse_variant()/,/^}}/p' bench/h200/h200_env.sh)\" && parse_variant '{variant}' "
              "configs/hybrid_12_b131k.yaml && printf '%s\\n' \"$VARIANT_CFG\" \"$VARIANT_TREE\" \"$VARIANT_LABEL\" "
              "\"${VARIANT_SETS[@]}\"")
    out = subprocess.run(["bash", "-c", script], cwd=ROOT, capture_output=True, text=True, check=True)
    return out.stdout.splitlines()


def test_sweep_variants_name_their_config_overrides_and_tree():
    assert _parse_variant("") == ["configs/hybrid_12_b131k.yaml", ".", "hybrid_12_b131k"]
    cfg, tree, label, *sets = _parse_variant("tree=.carry_old model.ssm_scan=mamba config=configs/attn_fit.yaml")
    assert (cfg, tree) == ("configs/attn_fit.yaml", ".carry_old")
    assert label == "attn_fit__tree_.carry_old__model.ssm_scan=mamba"  # the tree is in the label: its own JSON
    assert sets == ["--set", "model.ssm_scan=mamba"]


def test_sweep_variant_env_words_set_a_variable_for_that_variant():
    script = ("eval \"$(sed -n '/^parse_variant()/,/^}/p' bench/h200/h200_env.sh)\" && parse_variant "
              "'env=CUBLASLT_WORKSPACE_SIZE=0 model.ssm_scan=mamba env=A_B=x:y' configs/hybrid_12_b131k.yaml && "
              "printf '%s\\n' \"$VARIANT_LABEL\" \"${VARIANT_ENV[@]}\" \"${VARIANT_SETS[@]}\"")
    out = subprocess.run(["bash", "-c", script], cwd=ROOT, capture_output=True, text=True, check=True)
    label, *rest = out.stdout.splitlines()
    assert label == "hybrid_12_b131k__env_CUBLASLT_WORKSPACE_SIZE=0__model.ssm_scan=mamba__env_A_B=x_y"
    assert rest == ["CUBLASLT_WORKSPACE_SIZE=0", "A_B=x:y", "--set", "model.ssm_scan=mamba"]
    bad = subprocess.run(["bash", "-c", script.replace("env=A_B=x:y", "env=9X")], cwd=ROOT, capture_output=True,
                         text=True, check=False)
    assert bad.returncode == 2
    assert bad.stderr.strip() == "variant word 'env=9X': expected env=<NAME>=<value>"


def test_throughput_sweep_summary_names_the_sm_clock(tmp_path):
    """The sweep's one line a variant (from the JSONs in $OUT) carries the SM clock and power nvidia-smi sampled over
    the timed steps (golf.gpu_samples) and, from a profile, the device's busy share; a JSON whose clock was
    unavailable prints no clock, one without a profile no busy share."""
    stub = tmp_path / "bin"
    stub.mkdir()
    # python3: the summary's heredoc runs in the real interpreter; a variant writes the JSON train_throughput.py would
    (stub / "python3").write_text(
        '#!/usr/bin/env bash\n'
        'if [ "$1" = -c ]; then case "$2" in *causal_conv1d*) echo 1;; esac; exit 0; fi\n'
        f'if [ "$1" = - ]; then exec {sys.executable} "$@"; fi\n'
        'while [ $# -gt 0 ]; do [ "$1" = --label ] && label=$2; shift; done\n'
        'case "$label" in *x=1*) fields=\'{"unavailable": "nvidia-smi not found on PATH"}\';;\n'
        '  *) fields=\'{"sm_clock_mhz": 1755, "power_w": 690.5, "samples": 9}, "profile": {"device_busy_frac": 0.5814}\';; esac\n'
        'mkdir -p "$OUT"\n'
        'echo "{\\"label\\": \\"$label\\", \\"ms_per_step\\": 64.0, \\"tok_per_s\\": 2048000, \\"first_step_s\\": 16.5,'
        ' \\"gpu_clock\\": $fields}" > "$OUT/throughput_${label//[^A-Za-z0-9_.-]/-}.json"\n'
        'echo done\n')
    (stub / "python3").chmod(0o755)
    out = tmp_path / "out"
    res = subprocess.run(["bash", "bench/h200/h200_throughput_sweep.sh", "", "x=1"], cwd=ROOT,
                         env={"PATH": f"{stub}:/usr/bin:/bin", "OUT": str(out)}, capture_output=True, text=True,
                         check=False)
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert "hybrid_12: 64.0 ms/step, 2,048,000 tok/s, first step 16.5 s, SM 1755 MHz at 690.5 W, device busy 58%" in lines
    assert "hybrid_12__x=1: 64.0 ms/step, 2,048,000 tok/s, first step 16.5 s" in lines
    assert (out / "throughput.tgz").is_file()
