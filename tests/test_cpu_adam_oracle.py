#!/usr/bin/env python3
"""Oracle (suite `oracle`): zinc's CPU optimizers against PyTorch.

torch.optim.AdamW, torch.optim.Adam (L2 weight decay) and torch.optim.Adagrad
run 10 steps on the same random tensors as zinc (through
tests/adam_oracle_helper.c, every SIMD path this CPU has), and the params,
exp_avg and exp_avg_sq must agree within a tolerance; torch.optim.SGD
(momentum, dampening, Nesterov, weight decay) likewise, its momentum buffer
against zinc's exp_avg.  Lion and Adam without bias correction have no torch
optimizer: they are checked against the published update rules written out
below with torch operations; Lamb against DeepSpeed's FusedLamb arithmetic
written out in float64 (the whole tensor's norms, the clamped trust ratio).  NaN/Inf
gradients must poison exactly the elements torch's do, and the fp16/bf16
param copy must be torch's own rounding of zinc's params.

Needs PyTorch (Debian: python3-torch).  When the python3 running this lacks
it, another python3 on PATH that has it is used (meson may find a python3
from pyenv or a virtualenv first); when none has it, the test reports skip.
TAP output for meson.  Needs $ZINC_ADAM_ORACLE_HELPER and $ZINC_TEST_DIR.
"""
import math
import os
import struct
import subprocess
import sys
import tempfile
import zlib

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from tap import import_torch_or_skip  # noqa: E402

torch = import_torch_or_skip(__file__)
import numpy as np  # noqa: E402

HELPER = os.environ.get("ZINC_ADAM_ORACLE_HELPER", "adam_oracle_helper")
BASE = os.environ.get("ZINC_TEST_DIR", tempfile.gettempdir())
STEPS = 10
N = 10007  # not a multiple of any vector width
FP32, FP16, BF16 = 0, 1, 2
TDT = {FP16: torch.float16, BF16: torch.bfloat16}
NONE = 0xFFFFFFFF

# Tolerances after 10 steps, zinc (fp32) vs torch (fp32, a different order
# of the same operations): a relative 1e-5 (~80 ulps), plus an absolute
# floor for values that cancel to ~0 (m) or are tiny (v), and for params a
# relative 1e-5 of one update (lr).  A wrong bias correction, a dropped
# term or an off-by-one step is 1e-3 relative or more.
RTOL = 1e-5


def make_inputs(seed, gdt, nan_at=()):
    g = torch.Generator().manual_seed(seed)
    p = torch.rand(N, generator=g) * 2 - 1
    grads = []
    for _ in range(STEPS):
        x = (torch.rand(N, generator=g) * 2 - 1) * 1e-2
        x[::97] = 0.0
        if gdt != FP32:
            x = x.to(TDT[gdt]).float()  # representable in the grad dtype
        grads.append(x)
    for i, bad in nan_at:
        for x in grads:
            x[i] = bad
    return p, grads


def run_zinc(opt, hp, p0, grads, gdt, cdt, simd, scale):
    """Returns (p, m, v, copy) as numpy arrays, or None if simd is missing."""
    fd, fin = tempfile.mkstemp(dir=BASE, prefix="oracle-in.")
    os.close(fd)
    fout = fin.replace("oracle-in.", "oracle-out.")
    flags = ((1 if hp.get("bias_correction", True) else 0) | (2 if hp.get("adamw", True) else 0)
             | (4 if hp.get("eps_inside_sqrt") else 0) | (8 if hp.get("nesterov") else 0))
    extra = ((hp.get("max_coeff", 10.0), hp.get("min_coeff", 0.01)) if opt == 3 else
             (hp.get("momentum", 0.0), hp.get("dampening", 0.0)))
    with open(fin, "wb") as f:
        f.write(b"ZNORIN03")
        f.write(struct.pack("<6I", opt, N, STEPS, gdt, cdt, flags))
        f.write(struct.pack("<7d", hp["lr"], hp.get("beta1", 0.9), hp.get("beta2", 0.999),
                            hp.get("eps", 1e-8), hp.get("weight_decay", 0.0), *extra))
        f.write(struct.pack("<f", scale))
        f.write(p0.numpy().astype("<f4").tobytes())
        f.write(np.zeros(N, "<f4").tobytes())
        f.write(np.zeros(N, "<f4").tobytes())
        for x in grads:
            f.write(x.numpy().astype("<f4").tobytes())
    try:
        r = subprocess.run([HELPER, fin, fout, simd], capture_output=True, text=True)
        if r.returncode == 3:
            return None
        assert r.returncode == 0, f"helper failed: {r.stderr.strip()}"
        with open(fout, "rb") as f:
            data = f.read()
    finally:
        for path in (fin, fout):
            if os.path.exists(path):
                os.unlink(path)
    assert data[:8] == b"ZNOROUT1" and struct.unpack("<I", data[8:12])[0] == N
    off = 12
    out = []
    for dt, size in (("<f4", 4), ("<f4", 4), ("<f4", 4), ("<u2", 2)):
        out.append(np.frombuffer(data, dt, N, off).copy())
        off += N * size
    return out


def torch_run(make_opt, p0, grads, scale):
    p = p0.clone().requires_grad_(False)
    p = torch.nn.Parameter(p)
    opt = make_opt([p])
    for x in grads:
        p.grad = (x * scale).clone()  # fp32 multiply, as zinc's fused one
        opt.step()
    return p.detach(), opt.state[p]


# PyTorch 2's AdamW moves its first moment with lerp, m + w (g - m), where
# torch 1 (and DeepSpeed's cpu_adam, and zinc) compute b1 m + (1 - b1) g:
# once m is infinite, an infinite gradient of the same sign gives NaN with
# lerp (inf - inf) and stays infinite without.  Where the reference's
# moment is NaN and zinc's the infinity of the old rule, this torch's lerp
# made the difference; such elements are not counted as a NaN mismatch.
LERP_NAN = bool(torch.isnan(torch.tensor([math.inf]).lerp_(torch.tensor([math.inf]), 0.1)))


def close(name, got, want, atol):
    got = torch.from_numpy(np.asarray(got, dtype=np.float32))
    want = want.float()
    if name == "exp_avg" and LERP_NAN:
        want = torch.where(torch.isnan(want) & torch.isinf(got), got, want)
    nan_g, nan_w = torch.isnan(got), torch.isnan(want)
    assert torch.equal(nan_g, nan_w), (
        f"{name}: NaN at {int(nan_g.sum())} elements, torch at {int(nan_w.sum())}")
    ok = ~nan_w & (got != want)  # equal values (infinities too) are fine
    d = (got[ok] - want[ok]).abs()
    tol = RTOL * want[ok].abs() + atol
    if not bool((d <= tol).all()):
        i = int(torch.argmax(d - tol))
        raise AssertionError(f"{name}: element {i}: zinc {got[ok][i].item()!r}, "
                             f"reference {want[ok][i].item()!r} (|d| {d[i].item():.3g} > "
                             f"tolerance {tol[i].item():.3g})")
    return float((d / tol).max()) if d.numel() else 0.0


def check_copy(p, copy, cdt):
    if cdt == NONE:
        return
    t = torch.from_numpy(p).to(TDT[cdt]).view(torch.int16).numpy().view("<u2")
    ok = ~np.isnan(p)
    bad = np.nonzero((t != copy) & ok)[0]
    assert bad.size == 0, (f"param copy {bad.size} elements differ from torch's rounding, "
                           f"first at {bad[0]}: {copy[bad[0]]:#x} vs {t[bad[0]]:#x}")


# ---- the cases ---------------------------------------------------------------

def case_torch(opt_id, name, make_opt, hp, gdt, cdt, scale, state_keys, nan_at=(), m_atol=1e-9):
    """A case checked against a torch.optim optimizer.  m_atol: the first
    state's absolute floor (SGD's buffer sums whole gradients, ~1e-2, where
    Adam's m holds (1 - beta1) of each: its cancellations leave 10x more)."""
    def run(simd):
        p0, grads = make_inputs(zlib.crc32(name.encode()), gdt, nan_at)
        z = run_zinc(opt_id, hp, p0, grads, gdt, cdt, simd, scale)
        if z is None:
            return None
        pt, st = torch_run(make_opt, p0, grads, scale)
        worst = close("param", z[0], pt, RTOL * hp["lr"])
        if state_keys[0]:
            worst = max(worst, close("exp_avg", z[1], st[state_keys[0]], m_atol))
        if state_keys[1]:
            worst = max(worst, close("exp_avg_sq", z[2], st[state_keys[1]], 1e-13))
        check_copy(z[0], z[3], cdt)
        return worst
    return name, run


def case_rule(opt_id, name, rule, hp, gdt, cdt, scale):
    """A case checked against an update rule written out here (float32 torch
    ops, as the published algorithm).  rule(p, m, v, g) updates in place and
    returns, for a rule that takes sign(c) (Lion), |c| relative to its terms
    in float64, else None."""
    def run(simd):
        p0, grads = make_inputs(zlib.crc32(name.encode()), gdt)
        z = run_zinc(opt_id, hp, p0, grads, gdt, cdt, simd, scale)
        if z is None:
            return None
        p, m, v = p0.clone(), torch.zeros(N), torch.zeros(N)
        near_zero = torch.zeros(N, dtype=torch.bool)
        for t, x in enumerate(grads, 1):
            ratio = rule(p, m, v, x * scale, t)
            if ratio is not None:
                near_zero |= ratio < 1e-5
        pz = torch.from_numpy(z[0])
        keep = ~near_zero  # sign() of ~0 may go either way in float32
        assert int(near_zero.sum()) < N // 100
        worst = close("param", pz[keep].numpy(), p[keep], RTOL * hp["lr"])
        worst = max(worst, close("exp_avg", z[1], m, 1e-9))
        if opt_id == 0:
            worst = max(worst, close("exp_avg_sq", z[2], v, 1e-13))
        check_copy(z[0], z[3], cdt)
        return worst
    return name, run


def case_lamb(name, hp, gdt, cdt, scale):
    """Lamb against DeepSpeed's FusedLamb arithmetic in float64
    (csrc/lamb/fused_lamb_cuda_kernel.cu), from the same inputs:
      m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2
      u = m / (sqrt(v) + eps) + wd p     (sqrt(v + eps) with eps_inside_sqrt)
      ratio = |p| / |u| over the whole tensor, clamped to [min_coeff,
              max_coeff], 1 when either norm is 0
      p = p - lr sqrt(1 - b2^t) / (1 - b1^t) ratio u
    The norms decide every element's step: a ratio off by a term or a
    bound shows in every parameter."""
    def run(simd):
        p0, grads = make_inputs(zlib.crc32(name.encode()), gdt)
        z = run_zinc(3, hp, p0, grads, gdt, cdt, simd, scale)
        if z is None:
            return None
        b1, b2, eps, wd = hp.get("beta1", 0.9), hp.get("beta2", 0.999), hp.get("eps", 1e-8), \
            hp.get("weight_decay", 0.0)
        p, m, v = p0.double(), torch.zeros(N, dtype=torch.float64), \
            torch.zeros(N, dtype=torch.float64)
        ratios = []
        for t, x in enumerate(grads, 1):
            g = (x * scale).double()  # the fp32 product zinc fuses, exactly
            m = b1 * m + (1 - b1) * g
            v = b2 * v + (1 - b2) * g * g
            den = (v + eps).sqrt() if hp.get("eps_inside_sqrt") else v.sqrt() + eps
            u = m / den + wd * p
            w_norm, u_norm = float(p.norm()), float(u.norm())
            r = 1.0
            if w_norm != 0 and u_norm != 0:
                r = min(max(w_norm / u_norm, hp.get("min_coeff", 0.01)), hp.get("max_coeff", 10.0))
            ratios.append(r)
            size = hp["lr"]
            if hp.get("bias_correction", True):
                size = hp["lr"] * math.sqrt(1 - b2 ** t) / (1 - b1 ** t)
            p = p - size * r * u
        # The case must exercise the ratio, not a bound.
        lo, hi = hp.get("min_coeff", 0.01), hp.get("max_coeff", 10.0)
        assert any(lo < r < hi for r in ratios) or hp.get("clamped"), ratios
        worst = close("param", z[0], p, RTOL * hp["lr"])
        worst = max(worst, close("exp_avg", z[1], m, 1e-9))
        worst = max(worst, close("exp_avg_sq", z[2], v, 1e-13))
        check_copy(z[0], z[3], cdt)
        return worst
    return name, run


def lion_rule(lr, b1, b2, wd):
    # Chen et al. 2023, Algorithm 2 (and lion-pytorch):
    #   c = b1 m + (1 - b1) g;  p = p (1 - lr wd) - lr sign(c);  m = b2 m + (1 - b2) g
    def rule(p, m, v, g, t):
        c = m * b1 + g * (1 - b1)
        # how close c came to 0 relative to its terms, in float64
        terms = (m.double() * b1).abs() + (g.double() * (1 - b1)).abs()
        ratio = (m.double() * b1 + g.double() * (1 - b1)).abs() / terms.clamp_min(1e-300)
        p.mul_(1 - lr * wd)
        p.add_(torch.sign(c), alpha=-lr)
        m.mul_(b2).add_(g, alpha=1 - b2)
        return torch.where(terms > 0, ratio, torch.ones_like(ratio))
    return rule


def adam_nobc_rule(lr, b1, b2, eps, wd):
    # Kingma & Ba 2015, Algorithm 1 without the bias corrections, decoupled
    # decay (Loshchilov & Hutter 2019):  m = b1 m + (1-b1) g;
    # v = b2 v + (1-b2) g^2;  p = p (1 - lr wd) - lr m / (sqrt(v) + eps)
    def rule(p, m, v, g, t):
        m.mul_(b1).add_(g, alpha=1 - b1)
        v.mul_(b2).addcmul_(g, g, value=1 - b2)
        p.mul_(1 - lr * wd)
        p.addcdiv_(m, v.sqrt().add_(eps), value=-lr)
        return None
    return rule


AW = dict(lr=1e-2, weight_decay=0.01)
CASES = [
    case_torch(0, "AdamW, fp32 grads, bf16 copy",
               lambda ps: torch.optim.AdamW(ps, lr=1e-2, weight_decay=0.01), AW,
               FP32, BF16, 1.0, ("exp_avg", "exp_avg_sq")),
    case_torch(0, "AdamW foreach, fp16 grads x 1/128, fp16 copy",
               lambda ps: torch.optim.AdamW(ps, lr=1e-2, weight_decay=0.01, foreach=True), AW,
               FP16, FP16, 1.0 / 128, ("exp_avg", "exp_avg_sq")),
    case_torch(0, "AdamW, bf16 grads, betas (0.8, 0.99), eps 1e-6",
               lambda ps: torch.optim.AdamW(ps, lr=3e-3, betas=(0.8, 0.99), eps=1e-6,
                                            weight_decay=0.1),
               dict(lr=3e-3, beta1=0.8, beta2=0.99, eps=1e-6, weight_decay=0.1),
               BF16, NONE, 1.0, ("exp_avg", "exp_avg_sq")),
    case_torch(0, "Adam (L2 weight decay, adamw_mode off)",
               lambda ps: torch.optim.Adam(ps, lr=1e-2, weight_decay=0.01),
               dict(lr=1e-2, weight_decay=0.01, adamw=False),
               FP32, NONE, 1.0, ("exp_avg", "exp_avg_sq")),
    case_torch(0, "Adam, no weight decay, fp16 grads x 0.5",
               lambda ps: torch.optim.Adam(ps, lr=1e-3), dict(lr=1e-3, adamw=False),
               FP16, BF16, 0.5, ("exp_avg", "exp_avg_sq")),
    case_torch(1, "Adagrad",
               lambda ps: torch.optim.Adagrad(ps, lr=1e-2, eps=1e-10),
               dict(lr=1e-2, eps=1e-10), FP32, NONE, 1.0, (None, "sum")),
    case_torch(1, "Adagrad, weight decay 0.01, bf16 grads, fp16 copy",
               lambda ps: torch.optim.Adagrad(ps, lr=1e-2, eps=1e-10, weight_decay=0.01),
               dict(lr=1e-2, eps=1e-10, weight_decay=0.01), BF16, FP16, 1.0, (None, "sum")),
    case_torch(0, "AdamW, NaN and Inf gradients propagate as in torch",
               lambda ps: torch.optim.AdamW(ps, lr=1e-2, weight_decay=0.01), AW,
               FP32, BF16, 1.0, ("exp_avg", "exp_avg_sq"),
               nan_at=((5, math.nan), (100, math.inf), (N - 1, -math.inf))),
    case_rule(2, "Lion (published rule), decay 0.1",
              lion_rule(1e-3, 0.9, 0.99, 0.1),
              dict(lr=1e-3, beta1=0.9, beta2=0.99, weight_decay=0.1), FP32, BF16, 1.0),
    case_rule(2, "Lion (published rule), fp16 grads x 4",
              lion_rule(1e-4, 0.95, 0.98, 0.0),
              dict(lr=1e-4, beta1=0.95, beta2=0.98), FP16, NONE, 4.0),
    case_rule(0, "Adam without bias correction (published rule)",
              adam_nobc_rule(1e-2, 0.9, 0.999, 1e-8, 0.01),
              dict(lr=1e-2, weight_decay=0.01, bias_correction=False), FP32, NONE, 1.0),
    case_torch(4, "SGD with momentum 0.9, weight decay 0.01, bf16 copy",
               lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9, weight_decay=0.01),
               dict(lr=0.1, momentum=0.9, weight_decay=0.01), FP32, BF16, 1.0,
               ("momentum_buffer", None), m_atol=RTOL * 1e-2),
    case_torch(4, "SGD Nesterov, fp16 grads x 0.5",
               lambda ps: torch.optim.SGD(ps, lr=0.05, momentum=0.8, nesterov=True),
               dict(lr=0.05, momentum=0.8, nesterov=True), FP16, FP16, 0.5,
               ("momentum_buffer", None), m_atol=RTOL * 1e-2),
    case_torch(4, "SGD with dampening 0.3, bf16 grads",
               lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.5, dampening=0.3),
               dict(lr=0.1, momentum=0.5, dampening=0.3), BF16, NONE, 1.0,
               ("momentum_buffer", None), m_atol=RTOL * 1e-2),
    case_torch(4, "SGD without momentum",
               lambda ps: torch.optim.SGD(ps, lr=0.1), dict(lr=0.1), FP32, NONE, 1.0,
               (None, None)),
    case_lamb("Lamb (FusedLamb's arithmetic in float64), weight decay 0.01, bf16 copy",
              dict(lr=1e-2, weight_decay=0.01), FP32, BF16, 1.0),
    case_lamb("Lamb, eps inside the root, no bias correction, fp16 grads x 0.25",
              dict(lr=2e-3, beta1=0.8, beta2=0.99, eps=1e-6, eps_inside_sqrt=True,
                   bias_correction=False, weight_decay=0.1), FP16, FP16, 0.25),
    case_lamb("Lamb, ratio clamped to max_coeff 0.05",
              dict(lr=1e-2, max_coeff=0.05, min_coeff=0.01, clamped=True), BF16, NONE, 1.0),
]
PATHS = ["scalar", "avx2", "avx512"]


def main():
    os.makedirs(BASE, exist_ok=True)
    print(f"# torch {torch.__version__} ({sys.executable})")
    print(f"1..{len(CASES) * len(PATHS)}")
    failed = 0
    k = 0
    for name, run in CASES:
        for simd in PATHS:
            k += 1
            try:
                worst = run(simd)
                if worst is None:
                    print(f"ok {k} - {name} [{simd}] # SKIP {simd} is not available here")
                else:
                    print(f"ok {k} - {name} [{simd}] (worst error / tolerance {worst:.3f})")
            except Exception as e:  # noqa: BLE001 - report every failure
                failed += 1
                print(f"not ok {k} - {name} [{simd}]")
                for line in str(e).splitlines() or [repr(e)]:
                    print(f"# {line}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
