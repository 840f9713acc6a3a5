"""ProCo loss step: ours vs a faithful re-statement of the official formulation, same run.

One step = two contrastive views of B = 256 features: for each view, update both estimators,
recompute kappa / log C_p, logits, LA-CE; then backward. Each (implementation, C, p) runs in
its own subprocess so that the peak RSS (ru_maxrss, minus the RSS after import and setup) is
its own. Prints min / median step time and the peak memory, and the ratios.

    python benchmarks/bench_proco.py            # C in {100, 1000, 8142}, p in {128, 1024}

The official formulation at p = 1024, C = 8142 needs ~8.5 GB temporaries per update and minutes
per step on a CPU; it is skipped there (ours only).
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import time

import torch
import torch.nn.functional as F

B, TAU = 256, 0.1


# ----- the official formulation (LeapLabTHU/ProCo loss/proco.py), restated for the CPU -----------
def miller_log_ive(nu: int, x: torch.Tensor):
    """log ive(nu, x), log ive(nu + 1, x) by the official Miller backward recurrence: a Python
    loop from order 2 nu down to 1 with an isinf().any() host check per iteration."""
    x = x.double()
    i_next, i_cur = torch.zeros_like(x), torch.ones_like(x)
    scale = torch.zeros_like(x)
    cap = {}
    for i in range(2 * nu, 0, -1):
        i_prev = (2 * i / x) * i_cur + i_next
        if torch.isinf(i_prev).any():
            d = i_cur.clone()
            i_cur, i_next = i_cur / d, i_next / d
            scale = scale + torch.log(d)
            i_prev = (2 * i / x) * i_cur + i_next
        i_next, i_cur = i_cur, i_prev
        if i - 1 in (nu, nu + 1):
            cap[i - 1] = (torch.log(i_cur) + scale).clone()
    log_i0 = torch.log(i_cur) + scale
    base = torch.log(torch.special.i0e(x))
    return base + cap[nu] - log_i0, base + cap[nu + 1] - log_i0


class LogRatioC(torch.autograd.Function):
    @staticmethod
    def forward(ctx, k, p, logc):
        nu = int(p / 2 - 1)
        k64 = k.double()
        nu_, nu1_ = miller_log_ive(nu, k64)
        ctx.save_for_backward(torch.exp(nu1_ - nu_))
        return nu_ + k64 - nu * torch.log(k64 + 1e-20) - logc

    @staticmethod
    def backward(ctx, g):
        (r,) = ctx.saved_tensors
        r[r > 1] = 1
        return g * r, None, None


class OfficialEstimator:
    def __init__(self, c, p):
        self.c, self.p = c, p
        self.ave = 0.9 * F.normalize(torch.randn(c, p), dim=1)
        self.amount = torch.zeros(c)
        self.kappa = torch.full((c,), p * 90 / 19)
        self.logc = torch.zeros(c, dtype=torch.float64)

    def update_cv(self, feats, labels):
        n, c, a = feats.shape[0], self.c, self.p
        onehot = torch.zeros(n, c).scatter_(1, labels.view(-1, 1), 1)
        nca = onehot.view(n, c, 1).expand(n, c, a)
        by_sort = feats.view(n, 1, a).expand(n, c, a).mul(nca)  # the (N, C, p) temporary
        amount_ca = nca.sum(0)
        amount_ca[amount_ca == 0] = 1
        ave_ca = by_sort.sum(0) / amount_ca
        sw = onehot.sum(0).view(c, 1).expand(c, a)
        w = sw.div(sw + self.amount.view(c, 1).expand(c, a))
        w[w != w] = 0
        self.ave = (self.ave.mul(1 - w) + ave_ca.mul(w)).detach()
        self.amount += onehot.sum(0)

    def update_kappa(self):
        r = torch.linalg.norm(self.ave, dim=1)
        self.kappa = self.p * r / (1 - r**2)
        self.kappa[self.kappa > 1e5] = 1e5
        self.kappa[self.kappa < 0] = 1e5
        nu_, _ = miller_log_ive(int(self.p / 2 - 1), self.kappa.double())
        self.logc = nu_ + self.kappa.double() - (self.p / 2 - 1) * torch.log(self.kappa.double() + 1e-20)


def official_step(state, feats, y, log_prior):
    old, new = state
    loss = 0
    for z in feats:
        for est in (old, new):
            est.update_cv(z.detach(), y)
        old.update_kappa()
        mu = F.normalize(old.ave, dim=1)
        kt = torch.linalg.norm(old.kappa.view(1, -1, 1) * mu.unsqueeze(0) + z.unsqueeze(1) / TAU, dim=2)  # (B, C, p)
        logits = LogRatioC.apply(kt, old.p, old.logc)
        loss = loss + F.cross_entropy(logits + log_prior, y) / 2
    loss.backward()


# ----- ours -------------------------------------------------------------------------------------
def ours_step(est, feats, y, prior):
    from ltcl_lightning.losses.proco import proco_loss

    loss = 0
    for z in feats:
        est.update(z, y)
        loss = loss + proco_loss(z, y, est.kappa(), est.mean_direction(), TAU, prior) / 2
    loss.backward()


def rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS"):
                return int(line.split()[1]) / 1024
    return float("nan")


def child(impl: str, c: int, p: int, repeats: int) -> None:
    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "2")))
    torch.manual_seed(0)
    prior = torch.rand(c, dtype=torch.float64) + 0.01
    prior /= prior.sum()
    if impl == "ours":
        from ltcl_lightning.modules.vmf import VMFEstimator

        state = VMFEstimator(c, p)
        state.start_epoch(0)
    else:
        state = (OfficialEstimator(c, p), OfficialEstimator(c, p))
    w = torch.randn(p, p) / p**0.5
    base_rss = rss_mib()
    times = []
    for _ in range(repeats + 1):  # first call is a warm-up
        wr = w.clone().requires_grad_()
        x = torch.randn(2, B, p)
        y = torch.randint(0, c, (B,))
        feats = [F.normalize(x[i] @ wr, dim=1) for i in range(2)]
        t = time.perf_counter()
        if impl == "ours":
            ours_step(state, feats, y, prior)
        else:
            official_step(state, feats, y, torch.log(prior))
        times.append(time.perf_counter() - t)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"min_ms": 1e3 * min(times[1:]), "median_ms": 1e3 * statistics.median(times[1:]), "peak_mib": peak - base_rss}))


def main() -> None:
    cases = [(100, 128), (1000, 128), (8142, 128), (100, 1024), (1000, 1024), (8142, 1024)]
    load0 = os.getloadavg()
    print(
        f"torch {torch.__version__}, {os.cpu_count()} CPUs, threads {os.environ.get('BENCH_THREADS', '2')}, B {B}, "
        f"load at start {load0[0]:.2f}"
    )
    print(f"{'C':>6} {'p':>5} | {'official min/med ms':>22} {'MiB':>7} | {'ours min/med ms':>18} {'MiB':>7} | {'speed-up':>8} {'mem':>6}")
    for c, p in cases:
        res = {}
        for impl in ("official", "ours"):
            if impl == "official" and c * p > 1024 * 1024:  # p 1024, C 8142: 8.5 GB temporaries
                res[impl] = None
                continue
            repeats = 2 if impl == "official" and c * p >= 1000 * 1024 else 3
            out = subprocess.run(
                [sys.executable, __file__, "--child", impl, str(c), str(p), str(repeats)], capture_output=True, text=True, check=True
            )
            res[impl] = json.loads(out.stdout.strip().splitlines()[-1])
        o, u = res["official"], res["ours"]
        if o is None:
            print(f"{c:>6} {p:>5} | {'(skipped)':>22} {'':>7} | {u['min_ms']:>8.1f}/{u['median_ms']:<9.1f} {u['peak_mib']:>7.0f} |")
        else:
            print(
                f"{c:>6} {p:>5} | {o['min_ms']:>10.1f}/{o['median_ms']:<11.1f} {o['peak_mib']:>7.0f} | "
                f"{u['min_ms']:>8.1f}/{u['median_ms']:<9.1f} {u['peak_mib']:>7.0f} | "
                f"{o['min_ms'] / u['min_ms']:>7.1f}x {o['peak_mib'] / max(u['peak_mib'], 1):>5.1f}x",
                flush=True,
            )
    print(f"load at end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]))
    else:
        main()
