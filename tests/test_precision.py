"""The default precision follows the hardware: bf16 where the CPU computes it, fp32 elsewhere."""

import numpy as np
import pytest

from fbcnn_plugins.core.device import (
    cpu_flags, default_precision, native_bf16_from_flags, precision_name, resolve_precision,
)
from fbcnn_plugins.core.metrics import psnr
from fbcnn_plugins.core.restorer import Restorer

from conftest import natural_image, needs_torch, pillow_jpeg

# The flags lines of /proc/cpuinfo on real machines.
SAPPHIRE_RAPIDS_KVM = (  # Intel Xeon (Sapphire Rapids) guest: AVX-512-BF16 and AMX
    "fpu vme de pse tsc msr pae mce cx8 apic sep mtrr pge mca cmov pat pse36 clflush mmx fxsr sse sse2 ss ht "
    "syscall nx pdpe1gb rdtscp lm constant_tsc rep_good nopl xtopology nonstop_tsc cpuid tsc_known_freq pni "
    "pclmulqdq ssse3 fma cx16 pcid sse4_1 sse4_2 x2apic movbe popcnt tsc_deadline_timer aes xsave avx f16c rdrand "
    "hypervisor lahf_lm abm 3dnowprefetch cpuid_fault fsgsbase tsc_adjust bmi1 hle avx2 smep bmi2 erms invpcid rtm "
    "avx512f avx512dq rdseed adx smap avx512ifma clflushopt clwb avx512cd sha_ni avx512bw avx512vl xsaveopt xsavec "
    "xgetbv1 xsaves avx_vnni avx512_bf16 arat avx512vbmi umip avx512_vbmi2 gfni vaes vpclmulqdq avx512_vnni "
    "avx512_bitalg avx512_vpopcntdq rdpid cldemote movdiri movdir64b fsrm serialize tsxldtrk amx_bf16 avx512_fp16 "
    "amx_tile amx_int8 arch_capabilities"
)
EPYC_GENOA = (  # AMD EPYC 9004 (Zen 4): AVX-512-BF16, no AMX
    "fpu vme de pse tsc msr pae mce cx8 apic sep mtrr pge mca cmov pat pse36 clflush mmx fxsr sse sse2 ht syscall nx "
    "mmxext fxsr_opt pdpe1gb rdtscp lm constant_tsc rep_good nopl nonstop_tsc cpuid extd_apicid aperfmperf rapl pni "
    "pclmulqdq monitor ssse3 fma cx16 pcid sse4_1 sse4_2 x2apic movbe popcnt aes xsave avx f16c rdrand lahf_lm "
    "cmp_legacy svm extapic cr8_legacy abm sse4a misalignsse 3dnowprefetch osvw ibs skinit wdt tce topoext "
    "perfctr_core perfctr_nb bpext perfctr_llc mwaitx cpb cat_l3 cdp_l3 hw_pstate ssbd mba perfmon_v2 ibrs ibpb "
    "stibp ibrs_enhanced vmmcall fsgsbase bmi1 avx2 smep bmi2 erms invpcid cqm rdt_a avx512f avx512dq rdseed adx "
    "smap avx512ifma clflushopt clwb avx512cd sha_ni avx512bw avx512vl xsaveopt xsavec xgetbv1 xsaves cqm_llc "
    "cqm_occup_llc cqm_mbm_total cqm_mbm_local avx512_bf16 clzero irperf xsaveerptr rdpru wbnoinvd amd_ppin cppc "
    "arat npt lbrv svm_lock nrip_save tsc_scale vmcb_clean flushbyasid decodeassists pausefilter pfthreshold avic "
    "v_vmsave_vmload vgif x2avic v_spec_ctrl vnmi avx512vbmi umip pku ospke avx512_vbmi2 gfni vaes vpclmulqdq "
    "avx512_vnni avx512_bitalg avx512_vpopcntdq la57 rdpid overflow_recov succor smca fsrm flush_l1d"
)
ICE_LAKE_SERVER = (  # Intel Xeon 3rd gen (Ice Lake): AVX-512 and VNNI, but no bf16
    "fpu vme de pse tsc msr pae mce cx8 apic sep mtrr pge mca cmov pat pse36 clflush mmx fxsr sse sse2 ss ht syscall "
    "nx pdpe1gb rdtscp lm constant_tsc rep_good nopl xtopology nonstop_tsc cpuid tsc_known_freq pni pclmulqdq ssse3 "
    "fma cx16 pcid sse4_1 sse4_2 x2apic movbe popcnt tsc_deadline_timer aes xsave avx f16c rdrand hypervisor lahf_lm "
    "abm 3dnowprefetch invpcid_single ssbd ibrs ibpb stibp ibrs_enhanced fsgsbase tsc_adjust bmi1 avx2 smep bmi2 erms "
    "invpcid avx512f avx512dq rdseed adx smap avx512ifma clflushopt clwb avx512cd sha_ni avx512bw avx512vl xsaveopt "
    "xsavec xgetbv1 xsaves wbnoinvd arat avx512vbmi pku ospke avx512_vbmi2 gfni vaes vpclmulqdq avx512_vnni "
    "avx512_bitalg avx512_vpopcntdq rdpid md_clear flush_l1d arch_capabilities"
)
SKYLAKE_CLIENT = (  # Intel Core i7-6700: AVX2 only
    "fpu vme de pse tsc msr pae mce cx8 apic sep mtrr pge mca cmov pat pse36 clflush dts acpi mmx fxsr sse sse2 ss ht "
    "tm pbe syscall nx pdpe1gb rdtscp lm constant_tsc art arch_perfmon pebs bts rep_good nopl xtopology nonstop_tsc "
    "cpuid aperfmperf pni pclmulqdq dtes64 monitor ds_cpl vmx est tm2 ssse3 sdbg fma cx16 xtpr pdcm pcid sse4_1 "
    "sse4_2 x2apic movbe popcnt tsc_deadline_timer aes xsave avx f16c rdrand lahf_lm abm 3dnowprefetch cpuid_fault "
    "epb invpcid_single pti ssbd ibrs ibpb stibp tpr_shadow vnmi flexpriority ept vpid ept_ad fsgsbase tsc_adjust "
    "bmi1 hle avx2 smep bmi2 erms invpcid rtm mpx rdseed adx smap clflushopt intel_pt xsaveopt xsavec xgetbv1 "
    "xsaves dtherm ida arat pln pts hwp hwp_notify hwp_act_window hwp_epp md_clear flush_l1d arch_capabilities"
)


@pytest.mark.parametrize("flags, expected", [
    (SAPPHIRE_RAPIDS_KVM, "bf16"),
    (EPYC_GENOA, "bf16"),
    (ICE_LAKE_SERVER, "fp32"),
    (SKYLAKE_CLIENT, "fp32"),
    ("", "fp32"),  # no cpuinfo (macOS, Windows) or an Arm CPU, whose cpuinfo has no "flags" line
], ids=["sapphire-rapids", "epyc-genoa", "ice-lake", "skylake", "no-flags"])
def test_cpu_default_precision_follows_the_flags(flags, expected):
    flag_set = frozenset(flags.split())
    assert default_precision("cpu", flag_set) == expected
    assert native_bf16_from_flags(flag_set) == (expected == "bf16")


def test_this_cpus_default_comes_from_its_own_cpuinfo():
    expected = "bf16" if {"avx512_bf16", "amx_bf16"} & cpu_flags() else "fp32"
    assert resolve_precision(None, "cpu") == expected
    assert resolve_precision("auto", "cpu") == expected
    assert resolve_precision("fp32", "cpu") == "fp32"  # --precision fp32 still means fp32


@needs_torch
def test_torch_dtypes_and_precision_names_map_both_ways():
    import torch

    from fbcnn_plugins.core.device import torch_dtype

    assert [precision_name(d) for d in (torch.float32, torch.bfloat16, torch.float16)] == ["fp32", "bf16", "fp16"]
    assert [torch_dtype(n) for n in ("fp32", "bf16", "fp16")] == [torch.float32, torch.bfloat16, torch.float16]


@needs_torch
def test_cuda_default_is_a_half_precision_the_gpu_computes():
    import torch

    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU here")
    device = torch.device("cuda")
    expected = "bf16" if torch.cuda.is_bf16_supported(including_emulation=False) else "fp16"
    if torch.cuda.get_device_capability(device)[0] < 7:
        expected = "fp32"
    assert default_precision(device) == expected


@pytest.mark.parametrize("backend", [pytest.param("pytorch", marks=needs_torch), "openvino"])
def test_bf16_restores_a_real_photo_like_fp32(bundled_color_model, backend):
    # The bf16 default loses at most a few hundredths of a dB on the validation set; on one
    # real photo the two outputs differ by at most a couple of levels and the QF is the same.
    clean = natural_image(192, 256, seed=5)
    degraded = pillow_jpeg(clean, 20)
    fp32 = Restorer(bundled_color_model, device="cpu", precision="fp32", backend=backend).restore(degraded)
    bf16 = Restorer(bundled_color_model, device="cpu", precision="bf16", backend=backend).restore(degraded)
    assert abs(fp32.qf.predicted - bf16.qf.predicted) < 1.0
    assert psnr(fp32.image, bf16.image) > 45
    assert np.abs(fp32.image.astype(int) - bf16.image).max() <= 4
    assert abs(psnr(clean, fp32.image) - psnr(clean, bf16.image)) < 0.05
