"""The conclusions of notebook 07, drawn from the run's numbers: the models, the threshold, the test table,
calibration, patients, Grad-CAM, whole slides, the leakage lesson and the ranking.

Each ``*_text`` function returns one sentence for :func:`bclib.evaluation.conclusions.conclude`; it reads
the table a :class:`~bclib.evaluation.compare.RunComparison` method returned (numbers in ``attrs``). A
difference is called real only when its paired patient-bootstrap interval excludes zero.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from bclib.evaluation.conclusions import ci_text


def _names(names: list[str]) -> str:
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def _plural(count: int, word: str, plural: str | None = None) -> str:
    return f"{count} {word if count == 1 else plural or word + 's'}"


def started_from_text(started: pd.Series) -> str:
    """Which weights each model started from (``started``: descriptions by model name), one clause per kind."""
    clauses = []
    for description in dict.fromkeys(started):
        names = [str(name) for name, value in started.items() if value == description]
        verb = ("was" if len(names) == 1 else "were") if description == "trained from scratch" else "started from"
        clauses.append(f"{_names(names)} {verb} {description}")
    return "; ".join(clauses)


def _random_transfer(names: list[str]) -> str:
    """What ranking a transfer model without its ImageNet weights means (empty when every model had them)."""
    if not names:
        return ""
    one = len(names) == 1
    return (f" {_names(names)} started from random weights (ImageNet weights were missing): "
            f"{'its place ranks a large network' if one else 'their places rank large networks'} trained from "
            "random weights on this data, not transfer learning from ImageNet.")


def models_text(table: pd.DataFrame) -> str:
    """The models of the run and the validation choice (``table`` from ``RunComparison.models_table``)."""
    best, runner_up = table.attrs["best"], table.attrs["runner_up"]
    text = (f"{_plural(len(table), 'model')} in this run: {started_from_text(table['started from'])}. "
            f"{best} has the highest validation ROC-AUC ({table.loc[best, 'validation ROC-AUC']:.3f})")
    if runner_up is None:
        return text + "; it is the only model."
    second = table.index[1]
    behind = -runner_up["difference"]
    gap = f"{second} is {behind:.3f} behind" if behind >= 0.0005 else f"{second} is less than 0.001 behind"
    if runner_up["ci"] is None:
        text += f"; {gap} (no interval: too few validation patients)"
    elif runner_up["excludes_zero"]:
        text += f"; {gap}, beyond noise ({ci_text(*runner_up['ci'], signed=True)})"
    else:
        near = "a near-tie: " if abs(runner_up["difference"]) < 0.005 else ""
        text += (f"; {near}{gap} and the paired interval of the difference ({ci_text(*runner_up['ci'], signed=True)} over "
                 f"{table.attrs['val_patients']} validation patients) includes zero, so the choice between them "
                 "is close to a coin toss")
    return text + f". Where one model is needed below, it is {best}, chosen without looking at test."


def threshold_text(rules: pd.DataFrame, card_threshold: float, card_rule: str) -> str:
    """The two threshold rules computed on validation, against the card's threshold; ``rules`` has one row
    per rule (the target rule first) with ``threshold``, ``sensitivity`` and ``specificity`` on validation."""
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


def test_table_text(table: pd.DataFrame) -> str:
    """Every model on test: above chance or not, the spread of AUC, sensitivity and specificity
    (``table`` from ``RunComparison.table``)."""
    values, intervals = table.attrs["values"], table.attrs["intervals"]
    chance = [str(name) for name in values.index
              if not intervals[name]["roc_auc"] or intervals[name]["roc_auc"][0] <= 0.5]
    verdict = ("every model's ROC-AUC interval lies above 0.5" if not chance else
               f"{_names(chance)}: the ROC-AUC interval includes 0.5, so not distinguishable from chance")
    auc, sensitivity, specificity = (values[key].astype(float) for key in ("roc_auc", "sensitivity", "specificity"))
    rules = ", ".join(table.attrs["rules"])
    if len(values) == 1:
        return (f"on the test patients {verdict}: test ROC-AUC {auc.iloc[0]:.3f}; at the threshold chosen on "
                f"validation ({rules}) sensitivity {sensitivity.iloc[0]:.3f} and specificity {specificity.iloc[0]:.3f}."
                + _random_transfer(table.attrs["without_imagenet"]))
    return (f"on the test patients {verdict}. Test ROC-AUC runs from {auc.min():.3f} ({auc.idxmin()}) to "
            f"{auc.max():.3f} ({auc.idxmax()}). At the thresholds chosen on validation ({rules}) test sensitivity "
            f"runs from {sensitivity.min():.3f} to {sensitivity.max():.3f}, and specificity from "
            f"{specificity.min():.3f} ({specificity.idxmin()}) to {specificity.max():.3f} ({specificity.idxmax()}): "
            f"to find that share of the positive patches, {specificity.idxmin()} also calls "
            f"{1 - specificity.min():.0%} of the negative ones positive."
            + _random_transfer(table.attrs["without_imagenet"])
            + " Overlapping intervals of two models do not settle which is better: the ranking at the end compares "
            "them on the same patient resamples.")


def calibration_text(table: pd.DataFrame, base_rate_tolerance: float = 0.05) -> str:
    """What temperature scaling did to each model's test ECE, judged by its paired interval, and what the mean
    probabilities say about it (``table`` from ``RunComparison.calibration_table``).

    A mean probability further than ``base_rate_tolerance`` from the positive share is a shifted base rate.
    """
    positive, intervals = table.attrs["positive_fraction"], table.attrs["change_intervals"]
    changes = "; ".join(f"{name} {row['ece']:.3f} -> {row['ece_scaled']:.3f} (T = {row['temperature']:.2f}; change "
                        f"{'without interval' if intervals[name] is None else ci_text(*intervals[name], signed=True)})"
                        for name, row in table.iterrows())
    lowered = [str(name) for name in table.index if intervals[name] and intervals[name][1] < 0]
    raised = [str(name) for name in table.index if intervals[name] and intervals[name][0] > 0]
    noise = [str(name) for name in table.index if str(name) not in lowered + raised]
    text = f"test ECE before -> after temperature scaling fitted on validation: {changes}. "
    if lowered:
        text += f"Scaling really lowered it for {_names(lowered)} (the interval of the change lies below zero). "
    if raised:
        text += f"It really raised it for {_names(raised)} (the interval lies above zero). "
    if noise:
        text += (f"For {_names(noise)} the change is within noise (the interval includes zero). " if lowered or raised
                 else "No change can be told from noise: every interval includes zero. ")
    before, after = ((table[column] - positive).abs() for column in ("mean_probability", "mean_probability_scaled"))
    rose = table.index[table["ece_scaled"] > table["ece"]]
    away = [str(name) for name in rose if after[name] > before[name]]
    closer = [str(name) for name in rose if after[name] <= before[name]]
    text += ("A temperature moves the mean probability too: T > 1 pulls every probability toward 0.5, T < 1 pushes "
             "it away. ")
    if away:
        text += (f"Where ECE rose, for {_names(away)}, the mean probability moved away from the positive share "
                 f"{positive:.3f} (" + ", ".join(f"{name} {table.loc[name, 'mean_probability']:.3f} -> "
                                                f"{table.loc[name, 'mean_probability_scaled']:.3f}" for name in away)
                 + "). ")
    if closer:
        text += (f"For {_names(closer)} ECE rose although the mean probability moved closer to the positive share: "
                 "the temperature fitted on the validation patients spreads the test probabilities less well. ")
    shifted = [str(name) for name in table.index if before[name] > base_rate_tolerance]
    if shifted:
        weighted = [name for name in shifted if table.loc[name, "class weights"]]
        text += (f"The mean probabilities of {_names(shifted)} ("
                 + ", ".join(f"{table.loc[name, 'mean_probability']:.3f}" for name in shifted)
                 + f") sit far from the positive share: a shifted base rate"
                 + (f"; {_names(weighted)} trained with class weights, which count both classes as equally common"
                    if weighted else "")
                 + ". A temperature stretches or shrinks the logits around zero, so every probability stays on its "
                 "side of 0.5 and such an offset stays; an intercept, as in Platt scaling, shifts it (exercise 4). ")
    return text + "The AUCs are unchanged: a temperature keeps the ranking."


def patients_text(table: pd.DataFrame, name: str, positive_name: str, off_by: float = 0.25) -> str:
    """How well one model's share of patches called positive follows each test patient's true share
    (``table`` from ``RunComparison.patient_table``)."""
    from bclib.evaluation.metrics import fraction_correlation

    correlation = fraction_correlation(table)["pearson_predicted_fraction"]
    far = table[table["abs_fraction_error"] > off_by]
    high, low = int((far["fraction_error"] > 0).sum()), int((far["fraction_error"] < 0).sum())
    worst = table.loc[table["abs_fraction_error"].idxmax()]
    strength = ("undefined (too few patients, or a constant share)" if correlation is None else
                f"{correlation:.2f} (1: the patients lie on one rising line; 0: no linear relation)")
    text = (f"across {len(table)} test patients, the share of patches {name} calls {positive_name} follows the true "
            f"share with Pearson r = {strength}. For {_plural(len(far), 'patient')} the two shares "
            f"differ by more than {off_by:.2f} ({high} too high, {low} too low); the worst is patient "
            f"{worst['patient_id']} ({worst['true_fraction']:.2f} true, {worst['predicted_fraction']:.2f} called "
            f"{positive_name}). ")
    if high > low:
        text += (f"Too high is what a threshold chosen for high sensitivity does: it also calls many of a patient's "
                 f"other patches {positive_name}. ")
    return text + "A patient-level decision needs a rule of its own (exercise 3)."


def gradcam_text(run: Any, per_group: int, blank_level: int = 200) -> str:
    """What the Grad-CAM examples of every model show, measured on them: the size of the feature map, the
    share of the heat in the patch's central region, empty maps, and mostly blank patches (over half the
    pixels at least ``blank_level`` in every channel) by group."""
    parts, coarse, borders, blank_missed, blank_called = [], [], [], [], []
    for name in run.names:
        examples = run.gradcam(name, per_group)
        maps, groups = examples.heatmaps, np.asarray(examples.groups)
        height, width = maps.shape[1:]
        rows, columns = slice(height // 4, height - height // 4), slice(width // 4, width - width // 4)
        area = (rows.stop - rows.start) * (columns.stop - columns.start) / (height * width)
        mass = maps.sum(axis=(1, 2))
        central = float((maps[mass > 0][:, rows, columns].sum(axis=(1, 2)) / mass[mass > 0]).mean()
                        if (mass > 0).any() else 0.0)
        where = ("towards the borders" if central < 0.8 * area else "towards the centre" if central > 1.25 * area
                 else "about even")
        part = f"{name} ({examples.feature_size[0]}x{examples.feature_size[1]} map): {central:.0%} ({where})"
        if (mass == 0).any():
            part += f", {_plural(int((mass == 0).sum()), 'empty map')} (no region raised the score)"
        blank = (examples.images.min(axis=-1) >= blank_level).mean(axis=(1, 2)) > 0.5
        for group, found in (("false negative", blank_missed), ("false positive", blank_called)):
            chosen = blank & (groups == group)
            if chosen.any():
                part += (f", {int(chosen.sum())} of {int((groups == group).sum())} {group}s mostly blank "
                         f"(P up to {examples.scores[chosen].max():.2f})")
                found.append(name)
        parts.append(part)
        coarse += [name] if max(examples.feature_size) <= 4 else []
        borders += [name] if central < 0.8 * area else []
    text = (f"Grad-CAM explains the P({run.positive_name}) score, whatever the decision. Share of the heat in the "
            f"central region of the patches shown ({area:.0%} of each patch; an even spread puts as much there): "
            + "; ".join(parts) + ". ")
    if coarse:
        text += (f"The heatmaps of {_names(coarse)} are blown up from a grid of a few cells: at best they point at "
                 "a coarse part of the patch, hence the smooth blobs. ")
    if borders:
        text += (f"{_names(borders)} put{'s' if len(borders) == 1 else ''} more heat near the borders: check on the "
                 "images whether it follows tissue or the patch's frame, where the convolutions meet the padding. ")
    if blank_missed:
        whose = "every model's" if len(blank_missed) == len(run.names) else f"the {_names(blank_missed)}"
        text += (f"Mostly blank patches are among {whose} missed {run.positive_name} patches: the labels come from "
                 "regions outlined on the whole slide, and a patch of such a region can hold little tissue. ")
    if blank_called:
        text += (f"A mostly blank patch called {run.positive_name} ({_names(blank_called)}) shows a model reacting "
                 "to something other than tissue. ")
    return text + "A heatmap shows where a model looked, not where the disease is."


def slides_text(table: pd.DataFrame) -> str:
    """The slide maps' patients by split (``table`` from :func:`bclib.evaluation.mosaic.slides`)."""
    if not len(table):
        return "no patient of this dataset could be placed on a slide."

    def describe(rows: pd.DataFrame) -> str:
        return ", ".join(f"{row['patient']} ({row['patches']} patches, within-slide AUC "
                         + ("n/a" if pd.isna(row["roc_auc"]) else f"{row['roc_auc']:.3f}") + ")"
                         for _, row in rows.iterrows())

    test, learnt = table[table["split"] == "test"], table[table["split"] != "test"]
    parts = []
    if len(learnt):
        one = len(learnt) == 1
        parts.append(f"{len(learnt)} of the {_plural(len(table), 'patient')} shown "
                     f"{'was' if one else 'were'} in the {'/'.join(sorted(set(learnt['split']))).upper()} split, "
                     f"so the model learnt from or was tuned on {'this patient' if one else 'them'}: "
                     f"{describe(learnt)}. {'Its map shows' if one else 'Their maps show'} how well it fits patients "
                     "it has seen, no evidence of how it does on a new one")
    if len(test):
        parts.append(f"{'the held-out test patient' if len(test) == 1 else 'the held-out test patients'} "
                     f"{describe(test)}: only {'this map shows' if len(test) == 1 else 'these maps show'} the model on "
                     "a new patient (a test patient's folder here is a partial sample of its slide, hence the gaps)")
    else:
        parts.append("no test patient is shown: add a test patient's id to `slide_patients` for an honest map")
    return "; ".join(parts) + "."


def leakage_text(difference: dict, epochs: int) -> str:
    """What the leaky split did to the test AUC (``difference`` from ``LeakageLesson.difference``, with
    ``test_patients_seen``: how many test patients the leaky training set holds)."""
    gap, interval = difference["difference"], difference["ci"]
    if not difference.get("test_patients_seen", 1):
        return ("no test patient has a second image that could move into training (one image per patient here), so "
                "this dataset cannot leak this way: both copies trained on the same images.")
    text = (f"after {_plural(epochs, 'epoch')}, the copy trained with other patches of the test patients scores "
            f"ROC-AUC {difference['b']:.3f} on the same {difference['n_images']} test patches where the patient-level "
            f"copy scores {difference['a']:.3f}: a gap of {gap:+.3f} ")
    if interval is None:
        return text + "(no interval: too few patients). It is a lesson, never a result."
    text += f"({ci_text(*interval, signed=True)} over {difference['n_patients']} patients). "
    if not difference["excludes_zero"]:
        return text + ("The interval includes zero: with this little training the leak cannot be told from noise "
                       "here. Whether longer training, which lets a model memorise more of each patient, opens a gap "
                       "is exercise 2; this run does not show one.")
    return text + ("Seeing the test patients flattered the model: an image-level split would overstate its AUC by "
                   "about this much, by rewarding it for recognising patients rather than the disease. " if gap > 0 else
                   "The leaky copy scored lower, beyond noise: at this length of training the patches it gave up were "
                   "worth more than seeing the test patients. ") + "It is a lesson, never a result."


def ranking_text(ranking: pd.DataFrame) -> str:
    """Which differences of the test ranking are real, and why test may beat validation
    (``ranking`` from ``RunComparison.ranking``)."""
    label, leader = ranking.attrs["label"], ranking.attrs["leader"]
    test, validation = (ranking[f"{split} {label}"].astype(float) for split in ("test", "validation"))
    models = ranking["model"].tolist()
    text = f"on {ranking.attrs['test_patients']} test patients {leader} ranks first (test {label} {test.iloc[0]:.3f})"
    if len(models) == 1:
        return text + "; it is the only model of this run, so there is nothing to rank."
    real, tied = ranking.attrs["real"], ranking.attrs["tied"]
    if tied:
        one = len(tied) == 1
        text += (f". The paired interval{'' if one else 's'} of {_names(tied)} against it include{'s' if one else ''} "
                 f"zero: this run cannot rank {'it' if one else 'them'} apart from {leader}")
    if real:
        text += f". {_names(real)} {'is' if len(real) == 1 else 'are'} really below it (the interval excludes zero)"
    chosen = ranking.attrs["chosen_on_validation"]
    place = models.index(chosen) + 1
    text += (f". The model chosen on validation, {chosen}, " +
             ("leads on test too." if place == 1 else f"ranks {place} on test."))
    text += _random_transfer(ranking.attrs["without_imagenet"])
    higher = [name for name, t, v in zip(models, test, validation) if t > v]
    if higher:
        text += (f" Test {label} exceeds validation {label} for {_names(higher)}: the two splits hold different "
                 f"patients ({ranking.attrs['val_patients']} in validation, {ranking.attrs['test_patients']} in "
                 "test), some easier than others, and so few validation patients make a noisy estimate; a test "
                 "number above the validation one is the luck of the draw, not a sign of a better model.")
    return text
