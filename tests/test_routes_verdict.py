"""`routes_verdict`: the phase-2 verdict of a routes table, hand-checked (no training)."""

from __future__ import annotations

from mdvq.runs.experiments import (
    factor_paragraph,
    routes_evidence,
    routes_markdown,
    routes_verdict,
)


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


def five_rows(kl_fd: float = 1.1, hybrid_acc: float = 0.90, verdict: str = "vqvae") -> dict:
    """The five rows of ROUTE_ROWS with hand-picked figures (no training)."""
    rows = []
    for route, label, latent, family, acc, fd in (
            ("kl", "KL latent + latent diffusion", "kl", "continuous", 0.97, kl_fd),
            ("vq", "VQ latent + VQ-Diffusion", "vq", "discrete", 0.393, 30.0),
            ("hybrid", "VQ latent + continuous prior (hybrid)", "vq", "continuous", hybrid_acc,
             2.0),
            ("hybrid_unsnapped", "VQ latent + continuous prior (hybrid, decoded unsnapped)", "vq",
             "continuous", 0.88, 2.2),
            ("maskedtokens", "VQ latent + masked-token prior", "vq", "discrete", 0.60, 5.0)):
        rows.append({"route": route, "label": label, "latent": latent, "prior_family": family,
                     "autoencoder": "klvae" if latent == "kl" else "vqvae", "prior": route,
                     "conditional_accuracy": acc, "fd_ratio_to_floor": fd})
    return {"rows": rows, "decision": {"verdict": verdict, "reasons": []},
            "classifier": {"test_acc": 1.0}, "data_key": "k"}


def test_the_factor_paragraph_compares_the_latent_and_the_prior_by_hand():
    # latent: kl 0.970 vs hybrid (the snapped one, first) 0.900 = 7.0 points, FD/floor 2.0/1.1
    # = x1.8; prior: hybrid vs the best discrete row (maskedtokens 0.600, not vq 0.393) = 30.0
    # points, FD/floor 5.0/2.0 = x2.5
    assert factor_paragraph(five_rows()) == (
        "**Which factor explains the gap.** Latent (same continuous prior): kl 0.970 against "
        "hybrid 0.900 conditional accuracy (7.0 points), FD/floor 1.1 against 2.0 (x1.8). "
        "Prior (same VQ latent, the best discrete prior): hybrid 0.900 against maskedtokens "
        "0.600 conditional accuracy (30.0 points), FD/floor 2.0 against 5.0 (x2.5). In "
        "conditional accuracy the prior explains more of the gap (30.0 points for the prior "
        "against 7.0 for the latent); in FD/floor the prior does (x2.5 for the prior against "
        "x1.8 for the latent).")
    # KL at FD/floor 0.5: the latent's FD factor 2.0/0.5 = x4.0 beats the prior's x2.5
    assert factor_paragraph(five_rows(kl_fd=0.5)).endswith(
        "in FD/floor the latent does (x2.5 for the prior against x4.0 for the latent).")
    # a hybrid at 0.95: the latent 2.0 points, the prior 35.0
    assert "(35.0 points for the prior against 2.0 for the latent)" in factor_paragraph(
        five_rows(hybrid_acc=0.95))


def test_the_factor_paragraph_names_the_rows_it_lacks():
    assert factor_paragraph(table(0.91, 0.375)) == (  # today's two rows (no latent/family keys)
        "**Which factor explains the gap.** Not measured here: the latent's effect needs the "
        "rows kl and hybrid (same continuous prior, KL against VQ latent); the prior's effect "
        "needs hybrid and vq or maskedtokens (same VQ latent, continuous against discrete prior) "
        "(this run has kl, vq; add rows with routes.sampling.priors).")
    only = five_rows()
    only["rows"] = [r for r in only["rows"] if r["route"] in ("hybrid", "vq")]
    text = factor_paragraph(only)
    assert "Prior (same VQ latent, the best discrete prior): hybrid 0.900 against vq 0.393" in text
    assert "the latent's effect needs the rows kl and hybrid" in text
    assert "the prior's effect needs" not in text and "explains more" not in text


def test_the_verdict_over_many_rows_and_the_phase1_rule_by_autoencoder():
    text = routes_verdict(five_rows())
    assert text.startswith(
        "The KL route (KL latent + latent diffusion) generates the asked-for classes best: "
        "conditional accuracy 0.970 against 0.900 for the HYBRID route (VQ latent + continuous "
        "prior (hybrid)) (+7.0 points).")
    assert text.endswith("chose vqvae: it disagrees.")
    # the hybrid best: the rule chose the VQ-VAE, the best row's autoencoder -> it agrees
    assert routes_verdict(five_rows(hybrid_acc=0.99)).endswith("chose vqvae: it agrees.")


def test_routes_md_has_two_narrower_tables_and_the_evidence_of_every_row():
    md = routes_markdown(five_rows())
    recon = md.split("## Reconstruction and codebook")[1].split("## Generation and cost")[0]
    gen = md.split("## Generation and cost")[1].split("**Which factor")[0]
    assert "| route | latent + prior | autoencoder | test PSNR [dB] |" in recon
    assert "cond. acc." not in recon and "test PSNR" not in gen
    assert "| route | prior | cond. acc. | top vote | FD | FD floor | FD/floor | TSTR |" in gen
    for row in five_rows()["rows"]:
        assert f"| {row['route']} | {row['label']} |" in recon and f"| {row['route']} |" in gen
    evidence = routes_evidence(five_rows())
    assert "| maskedtokens | VQ latent + masked-token prior | 0.600 | 5.0 | - | - | - |" in evidence
    assert "**Which factor explains the gap.** Latent" in evidence


def test_the_factor_paragraph_says_when_latent_and_prior_weigh_alike():
    # kl 0.97 / FD 2.0 (x1.0 against the hybrid's 2.0); hybrid 0.90; discrete best 0.83 (x1.0):
    # 7.0 points each way
    rows = five_rows(kl_fd=2.0)
    for row in rows["rows"]:
        if row["route"] == "maskedtokens":
            row.update(conditional_accuracy=0.83, fd_ratio_to_floor=2.0)
    assert factor_paragraph(rows).endswith(
        "In conditional accuracy neither: the two are alike (7.0 points for the prior against "
        "7.0 for the latent); in FD/floor the two are alike (x1.0 for the prior against x1.0 "
        "for the latent).")
