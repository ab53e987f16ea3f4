"""`routes_verdict`: the phase-2 verdict of a routes table, hand-checked (no training)."""

from __future__ import annotations

from mdvq.runs.experiments import routes_markdown, routes_verdict


def table(kl_acc: float, vq_acc: float, verdict: str = "klvae") -> dict:
    return {"rows": [
        {"route": "kl", "autoencoder": "klvae", "prior": "latentdiffusion",
         "conditional_accuracy": kl_acc, "samples_per_second": 12.0,
         "autoencoder_wall_s": 100.0, "prior_wall_s": 200.0},
        {"route": "vq", "autoencoder": "vqvae", "prior": "vqdiffusion",
         "conditional_accuracy": vq_acc, "samples_per_second": 40.5,
         "autoencoder_wall_s": 120.0, "prior_wall_s": 30.0}],
        "decision": {"verdict": verdict, "reasons": []},
        "classifier": {"test_acc": 1.0}, "data_key": "k"}


def test_the_verdict_names_the_best_route_its_margin_cost_and_the_phase1_rule():
    text = routes_verdict(table(0.91, 0.375))
    # 0.910 - 0.375 = 0.535 -> +53.5 points; KL 100 + 200 = 300 s, VQ 120 + 30 = 150 s
    assert text == (
        "The KL route (klvae + latentdiffusion) generates the asked-for classes best: "
        "conditional accuracy 0.910 against 0.375 for the VQ route (vqvae + vqdiffusion) "
        "(+53.5 points). Cost (KL against VQ): sampling 12.0 against 40.5 samples/s; training "
        "300 s against 150 s (autoencoder + prior). The phase-1 rule (reconstruction only) chose "
        "klvae: it agrees.")


def test_the_verdict_says_when_the_phase1_rule_disagrees_or_the_routes_tie():
    assert "VQ route (vqvae + vqdiffusion) generates" in routes_verdict(table(0.5, 0.985))
    assert "chose klvae: it disagrees." in routes_verdict(table(0.5, 0.985))
    assert routes_verdict(table(0.9, 0.9)).startswith("Both routes generate the asked-for "
                                                      "classes equally well (conditional "
                                                      "accuracy 0.900).")
    assert routes_verdict({"rows": []}).startswith("No verdict")


def test_routes_md_opens_with_the_verdict():
    md = routes_markdown(table(0.91, 0.375))
    assert md.splitlines()[2].startswith("**Verdict.** The KL route")
