"""The conclusions of notebook 07, drawn from the test split's numbers: threshold, test table, calibration,
patients, Grad-CAM, whole slides, the leakage lesson and the ranking.

Like :mod:`bclib.evaluation.conclusions` (whose ``conclude`` shows them), each ``*_conclusion`` shows a
sentence that its ``*_text`` twin returns.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from bclib.display import show_banner
from bclib.evaluation.conclusions import METRIC_LABELS, ci_text, conclude


def _names(names: list[str]) -> str:
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def threshold_conclusion(rules: pd.DataFrame, card_threshold: float, card_rule: str) -> None:
    """The two threshold rules computed on validation, against the threshold in the model card."""
    conclude(threshold_text(rules, card_threshold, card_rule))


def threshold_text(rules: pd.DataFrame, card_threshold: float, card_rule: str) -> str:
    """The sentence of :func:`threshold_conclusion`; ``rules`` has one row per rule (the target rule first)
    with ``threshold``, ``sensitivity`` and ``specificity`` on validation."""
    (first, target), (second, youden) = list(rules.iterrows())[:2]
    text = (f"on validation, the rule '{first}' puts the threshold at {target['threshold']:.3f} (sensitivity "
            f"{target['sensitivity']:.3f}, specificity {target['specificity']:.3f}); '{second}' puts it at "
            f"{youden['threshold']:.3f}, which changes sensitivity by "
            f"{youden['sensitivity'] - target['sensitivity']:+.3f} and specificity by "
            f"{youden['specificity'] - target['specificity']:+.3f}. ")
    same = [str(name) for name, row in rules.iterrows() if np.isclose(row["threshold"], card_threshold)]
    text += (f"The model card's threshold {card_threshold:.3f} ({card_rule}) is the '{same[0]}' one: experiment.finish "
             "made this very choice. " if same else
             f"The model card's threshold {card_threshold:.3f} came from another rule ({card_rule}). ")
    return text + ("No test image played a part; which rule is right is a clinical choice: missing a positive "
                   "patch and raising a false alarm do not cost the same.")


def test_table_conclusion(table: pd.DataFrame) -> None:
    """Every model on test: above chance or not, the spread of AUC and of sensitivity."""
    conclude(test_table_text(table))


def test_table_text(table: pd.DataFrame) -> str:
    """The sentence of :func:`test_table_conclusion` (``table`` from ``RunComparison.table``)."""
    chance = [str(name) for name, above in table["above chance"].items() if not above]
    verdict = ("every model's ROC-AUC interval lies above 0.5" if not chance else
               f"{_names(chance)}: the ROC-AUC interval includes 0.5, so not distinguishable from chance")
    auc, sensitivity = table["roc_auc"].astype(float), table["sensitivity"].astype(float)
    rules = sorted(set(map(str, table["threshold rule"])))
    if len(table) == 1:
        return (f"on the test patients {verdict}: test ROC-AUC {auc.iloc[0]:.3f}, and test sensitivity "
                f"{sensitivity.iloc[0]:.3f} at the threshold chosen on validation ({rules[0]}).")
    return (f"on the test patients {verdict}. Test ROC-AUC runs from {auc.min():.3f} ({auc.idxmin()}) to "
            f"{auc.max():.3f} ({auc.idxmax()}); at thresholds chosen on validation ({', '.join(rules)}) test "
            f"sensitivity runs from {sensitivity.min():.3f} to {sensitivity.max():.3f}. Overlapping intervals "
            "of two models do not settle which is better: the ranking at the end compares them on the same "
            "patient resamples.")


def calibration_conclusion(table: pd.DataFrame) -> None:
    """What temperature scaling did to each model's ECE, and why it may have made it worse."""
    conclude(calibration_text(table))


def calibration_text(table: pd.DataFrame, base_rate_tolerance: float = 0.05, visible: float = 0.0005) -> str:
    """The sentence of :func:`calibration_conclusion` (``table`` from ``RunComparison.calibration_table``).

    A change of ECE smaller than ``visible`` (it rounds away at three decimals) counts as none; a mean
    probability further than ``base_rate_tolerance`` from the positive fraction is a shifted base rate.
    """
    changes = "; ".join(f"{name} {row['ece']:.3f} -> {row['ece_scaled']:.3f} (T = {row['temperature']:.2f})"
                        for name, row in table.iterrows())
    change = table["ece_scaled"] - table["ece"]
    worse = [str(name) for name in table.index[change > visible]]
    unchanged = [str(name) for name in table.index[change.abs() <= visible]]
    lowered = [str(name) for name in table.index[change < -visible]]
    text = f"test ECE before -> after temperature scaling fitted on validation: {changes}. "
    if lowered:
        text += ("Scaling lowered the calibration error of "
                 f"{'every model' if len(lowered) == len(table) else _names(lowered)}. ")
    if unchanged:
        text += f"It left {_names(unchanged)} unchanged to three decimals. "
    if worse:
        text += f"It made {_names(worse)} worse. "
    gap = (table["mean_probability"] - table["positive_fraction"]).abs()
    shifted = [str(name) for name in table.index[gap > base_rate_tolerance]]
    if shifted:
        weighted = [name for name in shifted if table.loc[name, "class weights"]]
        means = ", ".join(f"{name} {table.loc[name, 'mean_probability']:.3f}" for name in shifted)
        text += (f"Mean predicted probabilities ({means}) sit away from the {table['positive_fraction'].iloc[0]:.3f} "
                 "of test patches that are positive: a shifted base rate"
                 + (f"; {_names(weighted)} trained with class weights, which teach a model that both classes are "
                    "equally common" if weighted else "")
                 + ". A temperature only makes probabilities more or less extreme around 0.5 and cannot move their "
                 "average" + (", which is how fitting it can make ECE worse" if set(worse) & set(shifted) else
                              ", so part of the error stays after scaling")
                 + "; a shift of the logit (Platt scaling's intercept) or training without class weights fixes a "
                 "base rate. ")
    unexplained = [name for name in worse if name not in shifted]
    if unexplained:
        text += (f"For {_names(unexplained)}, whose mean probability is close to the positive share, the base rate "
                 "is not the cause: the temperature fitted on the validation patients does not carry over to the test "
                 "patients, and over few patients ECE itself is noisy. ")
    return text + "The AUCs are unchanged: a temperature keeps the ranking."


def patients_conclusion(table: pd.DataFrame, name: str, off_by: float = 0.25) -> None:
    """How well one model's per-patient predictions follow each test patient's true positive fraction."""
    conclude(patients_text(table, name, off_by))


def patients_text(table: pd.DataFrame, name: str, off_by: float = 0.25) -> str:
    """The sentence of :func:`patients_conclusion` (``table`` from ``RunComparison.patient_table``)."""
    from bclib.evaluation.metrics import fraction_correlation

    correlation = fraction_correlation(table)["pearson_mean_probability"]
    worst = table.loc[table["abs_fraction_error"].idxmax()]
    far = int((table["abs_fraction_error"] > off_by).sum())
    strength = "not defined" if correlation is None else f"r = {correlation:.2f}"
    return (f"across {len(table)} test patients, {name}'s mean probability per patient follows the true positive "
            f"fraction with Pearson {strength}; for {far} of them the share of patches called positive is off by "
            f"more than {off_by:.2f}, the worst being patient {worst['patient_id']} ({worst['true_fraction']:.2f} "
            f"true, {worst['predicted_fraction']:.2f} called positive). A patient-level decision needs a rule of "
            "its own (exercise 3).")


def gradcam_conclusion(run: Any, per_group: int) -> None:
    """The confident mistakes the Grad-CAM figures show, model by model."""
    conclude(gradcam_text(run, per_group))


def gradcam_text(run: Any, per_group: int) -> str:
    """The sentence of :func:`gradcam_conclusion` (``run`` a ``RunComparison``)."""
    parts = []
    for name in run.names:
        scores = run.scores(name, "test")
        groups = run.gradcam_examples(name, per_group)
        shown = ", ".join(f"{group}s {len(positions)}" for group, positions in groups.items())
        detail = [f"threshold {run.threshold(name):.3f}"]
        if len(groups["false positive"]):
            detail.append(f"highest-scored false alarm {scores[groups['false positive'][0]]:.2f}")
        if len(groups["false negative"]):
            detail.append(f"lowest-scored missed positive {scores[groups['false negative'][0]]:.2f}")
        parts.append(f"{name} ({shown}; {', '.join(detail)})")
    return ("shown per model, with the threshold chosen on validation: " + "; ".join(parts) + ". A mistake made "
            "with a score far from the threshold is one the model is sure of: compare where those heatmaps sit "
            "with the true positives'. Grad-CAM shows where a model looked, not where the disease is.")


def slides_conclusion(table: pd.DataFrame) -> None:
    """The slide maps' patients by split, loudly when the model learnt from them."""
    learnt = table[table["split"] != "test"] if len(table) else table
    if len(learnt):
        one = len(learnt) == 1
        show_banner(f"{len(learnt)} of the {len(table)} patients shown ({', '.join(learnt['patient'])}) "
                    f"{'was' if one else 'were'} in the {'/'.join(sorted(set(learnt['split']))).upper()} split: the "
                    f"model learnt from or was tuned on {'this patient' if one else 'them'}. "
                    f"{'This map is' if one else 'Their maps are'} no evidence of how it does on a new patient.",
                    "warning")
    conclude(slides_text(table))


def slides_text(table: pd.DataFrame) -> str:
    """The sentence of :func:`slides_conclusion` (``table`` from ``RunComparison.slides``)."""
    if not len(table):
        return "no patient of this dataset could be placed on a slide."

    def describe(rows: pd.DataFrame) -> str:
        return ", ".join(f"{row['patient']} ({row['patches']} patches, within-slide AUC "
                         + ("n/a" if pd.isna(row["roc_auc"]) else f"{row['roc_auc']:.3f}") + ")"
                         for _, row in rows.iterrows())

    test, learnt = table[table["split"] == "test"], table[table["split"] != "test"]
    parts = []
    if len(learnt):
        parts.append(f"seen in training or validation: {describe(learnt)}; these maps show how well the model "
                     "fits patients it learnt from")
    if len(test):
        parts.append(f"held-out test patient(s): {describe(test)}; only these maps show the model on a new patient "
                     "(a test patient's folder here is a partial sample of its slide, hence the gaps)")
    else:
        parts.append("no test patient is shown: add a test patient's id to `slide_patients` for an honest map")
    return "; ".join(parts) + "."


def leakage_conclusion(difference: dict, epochs: int) -> None:
    """What the leaky split did to the test AUC, with the paired interval of the gap."""
    conclude(leakage_text(difference, epochs))


def leakage_text(difference: dict, epochs: int) -> str:
    """The sentence of :func:`leakage_conclusion` (``difference`` from ``LeakageLesson.difference``, with
    ``test_patients_seen``: how many test patients the leaky training set holds)."""
    gap, interval = difference["difference"], difference["ci"]
    if not difference.get("test_patients_seen", 1):
        return ("no test patient has a second image that could move into training (one image per patient here), so "
                "this dataset cannot leak this way: both copies trained on the same images.")
    text = (f"after {epochs} epoch(s), the copy trained with other patches of the test patients scores ROC-AUC "
            f"{difference['b']:.3f} on the same {difference['n_images']} test patches where the patient-level copy "
            f"scores {difference['a']:.3f}: a gap of {gap:+.3f} ")
    if interval is None:
        return text + "(no interval: too few patients). It is a lesson, never a result."
    text += f"({ci_text(*interval)} over {difference['n_patients']} patients). "
    if not difference["excludes_zero"]:
        return text + ("The interval includes zero: with this little training the leak cannot be told from noise "
                       "here. A model that trains longer memorises more of each patient (try exercise 2); an "
                       "image-level split's optimism is hidden, not absent.")
    return text + ("Seeing the test patients flattered the model: an image-level split would overstate its AUC by "
                   "about this much, by rewarding it for recognising patients rather than the disease. " if gap > 0 else
                   "The leaky copy scored lower, beyond noise: at this length of training the patches it gave up were "
                   "worth more than seeing the test patients. ") + "It is a lesson, never a result."


def ranking_conclusion(ranking: pd.DataFrame) -> None:
    """Which differences of the test ranking are real, and why test may beat validation."""
    conclude(ranking_text(ranking))


def ranking_text(ranking: pd.DataFrame) -> str:
    """The sentence of :func:`ranking_conclusion` (``ranking`` from ``RunComparison.ranking``)."""
    metric, leader = ranking.attrs["metric"], ranking.attrs["leader"]
    label = METRIC_LABELS.get(metric, metric)
    test, validation = ranking[f"test {metric}"].astype(float), ranking[f"validation {metric}"].astype(float)
    models = ranking["model"].tolist()
    text = f"on {ranking.attrs['test_patients']} test patients {leader} ranks first (test {label} {test.iloc[0]:.3f})"
    if len(models) == 1:
        return text + "; it is the only model of this run, so there is nothing to rank."
    others = ranking.iloc[1:]
    real = others[others["interval excludes 0"] == True]["model"].tolist()  # noqa: E712 (None for the leader)
    tied = [name for name in others["model"] if name not in real]
    if tied:
        text += (f". The paired interval{'' if len(tied) == 1 else 's'} of {_names(tied)} against it "
                 f"include{'s' if len(tied) == 1 else ''} zero: this run cannot rank "
                 f"{'it' if len(tied) == 1 else 'them'} apart from {leader}")
    if real:
        text += f". {_names(real)} {'is' if len(real) == 1 else 'are'} really below it (the interval excludes zero)"
    chosen = ranking.attrs["chosen_on_validation"]
    place = models.index(chosen) + 1
    text += (f". The model chosen on validation, {chosen}, " +
             ("leads on test too." if place == 1 else f"ranks {place} on test."))
    higher = [name for name, t, v in zip(models, test, validation) if t > v]
    if higher:
        text += (f" Test {label} exceeds validation {label} for {_names(higher)}: the two splits hold different "
                 f"patients ({ranking.attrs['val_patients']} in validation, {ranking.attrs['test_patients']} in "
                 "test), some easier than others, and so few validation patients make a noisy estimate; a test "
                 "number above the validation one is the luck of the draw, not a sign of a better model.")
    return text
