"""The query attacks give the same results as the reference implementation kept here: the Square step
as it was written before (a sign test read back per step, the square copied per try) and logits from
the autograd path of the fused scan (the attacks' own classifier runs the inference path). Same seed,
same adversarial inputs bit for bit, same per-sample ``correct`` strings."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

from spikebench import components
from spikebench.attacks import ATTACKS, AttackOptions, Classifier, Target, ThreatModel
from spikebench.attacks.blackbox import Square, _randint, _signs
from spikebench.precision import bf16_supported, compute
from tests.unit.test_attacks import tiny_run


class ReferenceClassifier(Classifier):
    """Logits through the fused scan's autograd path (its input requires a gradient), detached."""

    def __call__(self, x: Tensor) -> Tensor:
        with torch.enable_grad():
            seq = self.encoding.sequence(x.detach().requires_grad_(True))
            return self.net(seq).logits.detach()


class ReferenceSquare(Square):
    """Square with its L-inf step as first written: up to two tries, each on a fresh copy."""

    @staticmethod
    def _step_linf(x, best, threat, sh, sw, gen):
        n, C, H, W = x.shape
        r, c = _randint(H - sh + 1, gen), _randint(W - sw + 1, gen)
        window = (slice(None), slice(None), slice(r, r + sh), slice(c, c + sw))
        signs = threat.eps * _signs((n, C, 1, 1), gen, x)
        for _ in range(2):
            cand = best.clone()
            cand[window] = threat.clip(x[window] + signs)
            same = (cand[window] - best[window]).abs().flatten(1).amax(1) < 1e-7
            if not same.any():
                break
            signs = torch.where(same[:, None, None, None], -signs, signs)
        return cand


def _run(attack, model, x, y, threat, opts):
    result = attack(opts).perturb(Target(model), x, y, threat, torch.Generator().manual_seed(5))
    correct = "".join("1" if ok else "0" for ok in model(result.x_adv).argmax(1).eq(y).tolist())
    return result, correct


CASES = [("square", "linf", 0.15), ("square", "l2", 1.0), ("nes", "linf", 0.15), ("spsa", "linf", 0.15)]


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.parametrize("name,norm,eps", CASES)
def test_query_attack_equals_reference(name, norm, eps, precision):
    if precision == "bf16" and not bf16_supported("cpu"):
        pytest.skip("this CPU has no bf16")
    run = tiny_run()
    x, y = run.data.test.x, run.data.test.y
    enc = components.build_encoding(run.cfg, None)
    model, reference = Classifier(run.net, enc), ReferenceClassifier(run.net, enc)
    opts = AttackOptions(queries=60, samples=4)
    threat = ThreatModel(norm, eps)  # type: ignore[arg-type]
    ref_attack = ReferenceSquare if name == "square" else ATTACKS.get(name)
    with compute(precision, "cpu"):
        assert torch.equal(model(x), reference(x))
        new, new_correct = _run(ATTACKS.get(name), model, x, y, threat, opts)
        old, old_correct = _run(ref_attack, reference, x, y, threat, opts)
    assert torch.equal(new.x_adv, old.x_adv)
    assert torch.equal(new.queries, old.queries)
    assert new_correct == old_correct
    assert 0 < new_correct.count("1") < len(new_correct)  # some samples broken, some not
