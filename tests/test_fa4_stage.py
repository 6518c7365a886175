"""bench/h200/fa4_stage.sh, the part that needs no GPU machine: packing FlashAttention-4's wheels into three carry
folders, and staging them over three calls (a stub python stands in for pip and the import)."""

import hashlib
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CU13 = "nvidia_cutlass_dsl_libs_cu13-4.8.1-cp312-cp312-manylinux_2_28_x86_64.whl"
CU13_BYTES = b"0123456789"  # split at PART_BYTES=6: two parts, as the real 92-MB wheel at 46,000,000


def _run(args, tmp_path: Path, **env) -> subprocess.CompletedProcess:
    base = {"PATH": "/usr/bin:/bin", "PART_BYTES": "6", "CARRY": str(tmp_path / "carry"),
            "STAGE": str(tmp_path / "stage"), "PYTHON": str(_stub_python(tmp_path))}
    return subprocess.run(["bash", str(ROOT / "bench/h200/fa4_stage.sh"), *args], cwd=tmp_path,
                          env={**base, **env}, capture_output=True, text=True, check=False)


def _stub_python(tmp_path: Path) -> Path:
    """Logs each call's arguments to python.log and succeeds (so `import einops` 'works' here)."""
    stub = tmp_path / "python_stub"
    if not stub.exists():
        stub.write_text(f'#!/bin/bash\necho "$*" >> {tmp_path / "python.log"}\n')
        stub.chmod(0o755)
    return stub


def _wheels(tmp_path: Path) -> Path:
    src = tmp_path / "wheels"
    src.mkdir()
    (src / CU13).write_bytes(CU13_BYTES)
    (src / "nvidia_cutlass_dsl_libs_cu12-4.8.1-cp312-cp312-manylinux_2_28_x86_64.whl").write_bytes(b"cu12")
    (src / "flash_attn_4-4.0.0b36-py3-none-any.whl").write_bytes(b"fa4")
    (src / "einops-0.8.2-py3-none-any.whl").write_bytes(b"einops")
    return src


def test_pack_splits_the_cu13_wheel_in_two_and_leaves_cu12_out(tmp_path):
    out = _run(["pack", str(_wheels(tmp_path))], tmp_path)
    assert out.returncode == 0, out.stderr
    carry = tmp_path / "carry"
    assert (carry / "p1/cu13.whl.part00").read_bytes() + (carry / "p2/cu13.whl.part01").read_bytes() == CU13_BYTES
    p3 = sorted(p.name for p in (carry / "p3").iterdir())
    assert p3 == ["cu13.sha256", "einops-0.8.2-py3-none-any.whl", "flash_attn_4-4.0.0b36-py3-none-any.whl"]
    assert (carry / "p3/cu13.sha256").read_text().split() == [hashlib.sha256(CU13_BYTES).hexdigest(), CU13]


def test_pack_never_touches_an_existing_carry_folder(tmp_path):
    (tmp_path / "carry").mkdir()
    (tmp_path / "carry/mine.txt").write_text("kept")
    out = _run(["pack", str(_wheels(tmp_path))], tmp_path)
    assert out.returncode == 2 and "exists" in out.stderr
    assert [p.name for p in (tmp_path / "carry").iterdir()] == ["mine.txt"]


def test_pack_refuses_a_split_into_more_than_two_parts(tmp_path):
    out = _run(["pack", str(_wheels(tmp_path))], tmp_path, PART_BYTES="3")
    assert out.returncode == 2 and "exactly two parts" in out.stderr
    assert not (tmp_path / "carry").exists()


def _carry_only(tmp_path: Path, part: str, packed: Path) -> None:
    """The call's carry: just one part folder, as the device leaves the others' copies in STAGE only."""
    carry = tmp_path / "carry"
    subprocess.run(["rm", "-rf", str(carry)], check=True)
    carry.mkdir()
    subprocess.run(["cp", "-r", str(packed / part), str(carry / part)], check=True)


def test_three_calls_stage_join_check_and_install(tmp_path):
    assert _run(["pack", str(_wheels(tmp_path))], tmp_path).returncode == 0
    packed = tmp_path / "packed"
    (tmp_path / "carry").rename(packed)

    _carry_only(tmp_path, "p1", packed)
    first = _run([], tmp_path)
    assert first.returncode == 3 and "waiting for cu13.whl.part01 cu13.sha256" in first.stdout
    _carry_only(tmp_path, "p2", packed)
    second = _run([], tmp_path)
    assert second.returncode == 3 and "waiting for cu13.sha256" in second.stdout
    assert not (tmp_path / "python.log").exists()  # nothing installed before the set is complete

    _carry_only(tmp_path, "p3", packed)
    third = _run([], tmp_path)
    assert third.returncode == 0, third.stdout + third.stderr
    assert (tmp_path / "stage" / CU13).read_bytes() == CU13_BYTES
    calls = (tmp_path / "python.log").read_text().splitlines()
    install = next(c for c in calls if c.startswith("-m pip install"))
    assert "--no-index --no-deps" in install
    assert f"./{CU13}" in install and "./flash_attn_4-4.0.0b36-py3-none-any.whl" in install
    assert "einops" not in install  # the image (here: the stub) already imports einops: never replaced
    assert any("from flash_attn.cute import flash_attn_func" in c for c in calls)


def test_a_corrupt_part_fails_the_checksum_and_installs_nothing(tmp_path):
    assert _run(["pack", str(_wheels(tmp_path))], tmp_path).returncode == 0
    (tmp_path / "carry/p2/cu13.whl.part01").write_bytes(b"XXXX")
    out = _run([], tmp_path)
    assert out.returncode != 0 and "FAILED" in out.stdout + out.stderr
    assert not (tmp_path / "python.log").exists()
