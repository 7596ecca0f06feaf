"""A campaign with an fp8 KV cache on a CPU that cannot run one (no AVX-512, no AMX): that
experiment fails with one line saying why, is not retried, and the rest of the campaign runs.

This machine may have AVX-512, so the worker reads a cpuinfo of a CPU without it (a 2-core
AMD EPYC of the kind the issue was found on) through LEM_CPUINFO: the only part not real here
is the CPU's flag list; engine, worker and campaign are.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from lem_cli import explain, load_manifest, only_campaign_dir, run_lem, write
from vllm_helpers import KV_CACHE_BYTES

from llenergymeasure.cpu_features import CPUINFO_ENV

pytest.importorskip(
    "vllm", reason="vLLM is not installed here: `make test-vllm` runs these in .venv-vllm"
)
pytestmark = pytest.mark.integration

EPYC_WITHOUT_AVX512 = """\
processor	: 0
vendor_id	: AuthenticAMD
model name	: AMD EPYC 7B12
flags		: fpu vme de pse tsc msr pae mce cx8 apic sep mtrr pge mca cmov pat pse36 clflush \
mmx fxsr sse sse2 ht syscall nx mmxext fxsr_opt pdpe1gb rdtscp lm constant_tsc rep_good nopl \
nonstop_tsc cpuid extd_apicid tsc_known_freq pni pclmulqdq ssse3 fma cx16 sse4_1 sse4_2 movbe \
popcnt aes xsave avx f16c rdrand hypervisor lahf_lm cmp_legacy cr8_legacy abm sse4a misalignsse \
3dnowprefetch osvw topoext ssbd ibrs ibpb stibp vmmcall fsgsbase tsc_adjust bmi1 avx2 smep bmi2 \
rdseed adx smap clflushopt clwb sha_ni xsaveopt xsavec xgetbv1 clzero xsaveerptr arat npt \
nrip_save umip rdpid
"""

CAMPAIGN = f"""\
name: fp8-on-cpu
cycles: 1
retries: 1
base:
  model: builtin:tiny-llama
  n_prompts: 2
  batch_size: 2
  max_input_tokens: 16
  max_output_tokens: 3
  warmup: {{runs: 1}}
  vllm: {{kv_cache_memory_bytes: {KV_CACHE_BYTES}, enforce_eager: true}}
grid:
  backend: [pytorch, vllm]        # the rest of the campaign: a pytorch run (quick to start)
  vllm.kv_cache_dtype: [fp8]
"""


def test_fp8_kv_cache_fails_alone_with_one_line(tmp_path: Path) -> None:
    cpuinfo = write(tmp_path / "cpuinfo", EPYC_WITHOUT_AVX512)
    campaign_file = write(tmp_path / "fp8.yaml", CAMPAIGN)
    proc = run_lem(
        "campaign",
        campaign_file,
        "-o",
        tmp_path / "out",
        cwd=tmp_path,
        env={CPUINFO_ENV: str(cpuinfo)},
    )
    assert proc.returncode == 1, explain(proc)  # a failed experiment, not a crash
    manifest = load_manifest(only_campaign_dir(tmp_path / "out"))
    entries = {e.backend: e for e in manifest.entries}
    assert entries["pytorch"].status == "done", explain(proc)
    failed = entries["vllm"]
    assert failed.status == "failed"
    assert failed.attempts == 1  # a CPU that lacks a feature is not retried
    assert failed.error is not None and "\n" not in failed.error
    assert "FP8 KV cache on CPU requires x86 with AVX-512 or AMX" in failed.error
    assert "AMD EPYC 7B12" in failed.error
    assert "1 done, 1 failed" in proc.stdout, explain(proc)


def test_cpu_flags_agree_with_what_vllm_asks_torch() -> None:
    """The refusal and the skips read /proc/cpuinfo; vLLM's attention backend asks torch (CPUID).
    On a real host the two agree; where they do not (an emulator such as qemu-user passes the
    host's /proc/cpuinfo through while hiding AVX-512 from CPUID), lem's pre-check is wrong."""
    import torch

    from llenergymeasure.cpu_features import read_cpu_features

    features = read_cpu_features()
    assert (features.avx512, features.amx) == (
        torch.cpu._is_avx512_supported(),
        torch.cpu._is_amx_tile_supported(),
    ), features.describe()
