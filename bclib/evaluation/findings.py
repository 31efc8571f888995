"""The conclusions of notebook 07, drawn from the run's numbers: the models, the threshold, the test table,
calibration, patients, Grad-CAM, whole slides, the leakage lesson, the ranking and the committee.

Each ``*_text`` function returns one sentence for :func:`bclib.evaluation.conclusions.conclude`; it reads
the table a :class:`~bclib.evaluation.compare.RunComparison` method returned (numbers in ``attrs``). A
difference is called real only when its paired patient-bootstrap interval excludes zero. ``words``
(:func:`bclib.data.explore.index_words` of the session's index) names the dataset and its images; without
it the texts speak of IDC's patches.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from bclib.data.explore import DatasetWords, dataset_words, index_words
from bclib.data.official_splits import PUBLISHED_RESULTS
from bclib.evaluation.conclusions import METRIC_LABELS, ci_text, difference_text

IDC_WORDS = dataset_words("idc")


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
        others = [name for name in table.attrs.get("within_noise", []) if name != second]
        also = (f"; so does the interval of {_names(others)} against {best} (the table above)" if others else "")
        text += (f"; {near}{gap} and the paired interval of the difference ({ci_text(*runner_up['ci'], signed=True)} over "
                 f"{table.attrs['val_patients']} validation patients) includes zero{also}, so the choice "
                 f"{'among them' if others else 'between the two'} is close to a coin toss")
    return text + f". Where one model is needed below, it is {best}, chosen without looking at test."


def threshold_text(rules: pd.DataFrame, card_threshold: float, card_rule: str,
                   words: DatasetWords = IDC_WORDS) -> str:
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
                   f"{words.image} and raising a false alarm do not cost the same.")


def test_table_text(table: pd.DataFrame, words: DatasetWords = IDC_WORDS) -> str:
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
            f"to find that share of the positive {words.images}, {specificity.idxmin()} also calls "
            f"{1 - specificity.min():.0%} of the negative ones positive."
            + _random_transfer(table.attrs["without_imagenet"])
            + " Overlapping intervals of two models do not settle which is better: the ranking at the end compares "
            "them on the same patient resamples.")


#: Janowczyk & Madabhushi (2016), AlexNet on IDC: their published test numbers, on their own test patients.


def operating_points_text(values: pd.DataFrame, best: str, change: dict, words: DatasetWords = IDC_WORDS,
                          benchmark_list: str | None = None) -> str:
    """The screening and the benchmark operating point of ``best`` on test. ``values``: one row per (model,
    operating point) with ``threshold``, ``balanced_accuracy``, ``f1``, ``sensitivity``, ``specificity``, the
    screening point first; ``change``: the paired balanced-accuracy change between the two thresholds;
    ``benchmark_list``: where the test patients come from in the 2016 benchmark's lists (benchmark split)."""
    screening, benchmark = (values.loc[best].iloc[position] for position in (0, 1))
    text = (f"for {best}, the benchmark threshold {benchmark['threshold']:.3f} (Youden's J on validation, which is "
            f"also the threshold of best validation balanced accuracy) gives test balanced accuracy "
            f"{benchmark['balanced_accuracy']:.3f} and F1 {benchmark['f1']:.3f} (sensitivity "
            f"{benchmark['sensitivity']:.3f}, specificity {benchmark['specificity']:.3f}); the screening threshold "
            f"{screening['threshold']:.3f} gives {screening['balanced_accuracy']:.3f} and {screening['f1']:.3f} "
            f"(sensitivity {screening['sensitivity']:.3f}, specificity {screening['specificity']:.3f}). ")
    if change.get("ci") is not None:
        text += (f"The change of balanced accuracy, {change['difference']:+.3f} "
                 f"({ci_text(*change['ci'], signed=True)} on the same patient resamples), "
                 + ("is beyond noise. " if change["excludes_zero"] else "cannot be told from noise. "))
    if words.title != "IDC":
        return text + ("Published numbers are usually given at such a balanced point; say which threshold a number is "
                       f"at when comparing. The 2016 benchmark of this series was measured on IDC, not on "
                       f"{words.title}. Both thresholds were chosen on validation only.")
    return text + ("Published numbers are usually at such a balanced point: on IDC, " + benchmark_reference(benchmark_list)
                   + " Both thresholds were chosen on validation only.")


def benchmark_reference(benchmark_list: str | None) -> str:
    """The 2016 benchmark's published numbers, and how this run's test patients relate to its lists
    (``benchmark_list``: :attr:`bclib.data.splits.Split.benchmark_list`)."""
    text = (f"the 2016 benchmark (Janowczyk & Madabhushi, AlexNet trained on its full training set) reports balanced "
            f"accuracy {PUBLISHED_RESULTS['balanced_accuracy']:.4f} and F1 {PUBLISHED_RESULTS['f1']:.4f} on its test "
            "patients; ")
    if benchmark_list == "test":
        return text + "this run's test patients are those same patients, so the numbers can be set side by side."
    if benchmark_list == "val":
        return text + ("this run's test patients are the benchmark's validation patients (its test patients are not "
                       "in this data), patients nothing here was chosen on, so the comparison is close but indicative.")
    return text + "this run's test patients are not theirs, so the comparison is only indicative."


def _change(row: pd.Series) -> str:
    interval = row["change_ci"]
    return "no interval" if interval is None else ci_text(*interval, signed=True)


def calibration_methods_text(table: pd.DataFrame, base_rate_tolerance: float = 0.05,
                             words: DatasetWords = IDC_WORDS) -> str:
    """What temperature and Platt scaling did to each model's test ECE, judged by their paired intervals, and
    why a temperature cannot undo class weights (``table`` from :func:`bclib.evaluation.calibration.methods_table`)."""
    values, positive = table.attrs["values"], table.attrs["positive_fraction"]
    names = list(dict.fromkeys(values.index.get_level_values("model")))
    parts, platt_better, temperature_worse, temperature_better = [], [], [], []
    for name in names:
        before, scaled, platt = (values.loc[(name, method)] for method in ("uncalibrated", "temperature", "Platt"))
        parts.append(f"{name} {before['ece']:.3f} -> {scaled['ece']:.3f} with T (change {_change(scaled)}) and "
                     f"{platt['ece']:.3f} with Platt (change {_change(platt)})")
        platt_better += [name] if platt["ece"] < scaled["ece"] else []
        low, high = scaled["change_ci"] or (0.0, 0.0)
        temperature_worse += [name] if low > 0 else []
        temperature_better += [name] if high < 0 else []
    text = f"test ECE uncalibrated -> after scaling fitted on validation: {'; '.join(parts)}. "
    lowered = [name for name in names if (values.loc[(name, "Platt"), "change_ci"] or [0, 0])[1] < 0]
    text += (f"Platt scaling gives the lower ECE for {len(platt_better)} of {len(names)} models"
             + (f", and lowers it beyond noise for {_names(lowered)} (the interval of the change lies below zero). "
                if lowered else "; no change it makes can be told from noise here. "))
    if temperature_worse or temperature_better:
        text += "Temperature scaling " + " and ".join(
            f"{verb} the ECE of {_names(names_)} beyond noise" for verb, names_ in
            (("raised", temperature_worse), ("lowered", temperature_better)) if names_) + ". "
    ece = values["ece"].unstack("method")
    platt_worse = [name for name in names if ece.loc[name, "Platt"] > ece.loc[name, "uncalibrated"] + 0.0005]
    if platt_worse:
        text += (f"Platt scaling made {_names(platt_worse)} worse: two parameters fitted on few validation patients "
                 "can follow their quirks rather than the test patients'. ")
    offset = float(np.log(positive / (1 - positive)))
    weighted = [name for name in names if values.loc[(name, "uncalibrated"), "class_weights"]]
    if weighted:
        name = max(weighted, key=lambda model: values.loc[(model, "uncalibrated"), "mean_probability"])
        before, scaled, platt = (values.loc[(name, method)] for method in ("uncalibrated", "temperature", "Platt"))
        temperature = (f"Dividing by T = {scaled['temperature']:.2f} stretches or shrinks the logits around zero but "
                       f"adds nothing to them: the mean probability moves only to {scaled['mean_probability']:.3f} "
                       f"and no {words.image} crosses 0.5. Platt's intercept adds a shift (fitted: {platt['intercept']:+.2f}, "
                       f"with slope {platt['slope']:.2f}); the mean probability becomes "
                       f"{platt['mean_probability']:.3f}. ")
        if before["mean_probability"] > positive + base_rate_tolerance:
            text += (f"Why a temperature alone cannot fix a class-weighted model: class weights make {name} train as "
                     f"if both classes were equally common, so its mean probability is "
                     f"{before['mean_probability']:.3f} where {positive:.3f} of the test {words.images} are positive: "
                     f"the base rate puts an offset of about log({positive:.3f} / {1 - positive:.3f}) = {offset:+.2f} "
                     f"into every logit, which the weights took out. " + temperature)
            shifted = [other for other in names if other not in weighted
                       and values.loc[(other, "uncalibrated"), "mean_probability"] > positive + base_rate_tolerance]
            if shifted:
                text += (f"The weights are not the only cause in this run: {_names(shifted)}, trained without them, "
                         f"{'has a mean probability' if len(shifted) == 1 else 'have mean probabilities'} of " + ", ".join(
                             f"{values.loc[(other, 'uncalibrated'), 'mean_probability']:.3f}" for other in shifted)
                         + " too (early stopping on AUC does not ask a model to match the base rate), and Platt's "
                         "intercept removes that shift as well. ")
        else:
            text += (f"Class weights, which count both classes as equally common, should raise the mean probability "
                     f"above the positive share; {_names(weighted)} trained with them, yet {name}'s mean probability "
                     f"is {before['mean_probability']:.3f} against a positive share of {positive:.3f}, so this run "
                     "does not show that offset. Whatever the offset, a temperature cannot remove it. " + temperature)
    return text + "Neither changes an AUC: both keep the ranking, so a threshold must be chosen again after them."


def patients_text(table: pd.DataFrame, name: str, positive_name: str, off_by: float = 0.25,
                  words: DatasetWords = IDC_WORDS) -> str:
    """How well one model's share of patches called positive follows each test patient's true share
    (``table`` from ``RunComparison.patient_table``)."""
    from bclib.evaluation.metrics import fraction_correlation

    if len(table) and (table["n"] == 1).all():
        wrong = int((table["predicted_fraction"] != table["true_fraction"]).sum())
        return (f"every one of the {len(table)} test patients has a single image here (as where a dataset gives no "
                f"patient ids and each image counts as its own patient): a patient's true share is 0 or 1 and the share {name} "
                f"calls {positive_name} is its decision on that one image, right for {len(table) - wrong} and wrong "
                f"for {wrong}. This section repeats the image-level results above; it needs several images per "
                "patient to say anything about patients.")

    correlation = fraction_correlation(table)["pearson_predicted_fraction"]
    far = table[table["abs_fraction_error"] > off_by]
    high, low = int((far["fraction_error"] > 0).sum()), int((far["fraction_error"] < 0).sum())
    worst = table.loc[table["abs_fraction_error"].idxmax()]
    strength = ("undefined (too few patients, or a constant share)" if correlation is None else
                f"{correlation:.2f} (1: the patients lie on one rising line; 0: no linear relation)")
    text = (f"across {len(table)} test patients, the share of {words.images} {name} calls {positive_name} follows "
            f"the true share with Pearson r = {strength}. For {_plural(len(far), 'patient')} the two shares "
            f"differ by more than {off_by:.2f} ({high} too high, {low} too low); the worst is patient "
            f"{worst['patient_id']} ({worst['true_fraction']:.2f} true, {worst['predicted_fraction']:.2f} called "
            f"{positive_name}). ")
    if high > low:
        text += (f"Too high is what a threshold chosen for high sensitivity does: it also calls many of a patient's "
                 f"other {words.images} {positive_name}. ")
    return text + "A patient-level decision needs a rule of its own (exercise 3)."


def gradcam_text(run: Any, per_group: int, blank_level: int = 200) -> str:
    """What the Grad-CAM examples of every model show, measured on them: the size of the feature map, the
    share of the heat in the patch's central region, empty maps, and mostly blank patches (over half the
    pixels at least ``blank_level`` in every channel) by group."""
    session = getattr(run, "session", None)
    words = index_words(session.index) if hasattr(session, "index") else IDC_WORDS
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
                         + (f"(P up to {examples.scores[chosen].max():.2f})" if examples.scores[chosen].max() >= 0.005
                            else "(P below 0.01)"))
                found.append(name)
        parts.append(part)
        coarse += [name] if max(examples.feature_size) <= 4 else []
        borders += [name] if central < 0.8 * area else []
    text = (f"Grad-CAM explains the P({run.positive_name}) score, whatever the decision. Share of the heat in the "
            f"central region of the {words.images} shown ({area:.0%} of each {words.image}; an even spread puts as "
            "much there): "
            + "; ".join(parts) + ". ")
    if coarse:
        text += (f"The heatmaps of {_names(coarse)} are blown up from a grid of a few cells: at best they point at "
                 f"a coarse part of the {words.image}, hence the smooth blobs. ")
    if borders:
        text += (f"{_names(borders)} put{'s' if len(borders) == 1 else ''} more heat near the borders: check on the "
                 f"images whether it follows {'tissue' if words.stained_tissue else 'what the image shows'} or the "
                 f"{words.image}'s frame, where the convolutions meet the padding. ")
    if blank_missed:
        whose = "every model's" if len(blank_missed) == len(run.names) else f"the {_names(blank_missed)}"
        text += (f"Mostly blank {words.images} are among {whose} missed {run.positive_name} {words.images}"
                 + (": the labels come from regions outlined on the whole slide, and a patch of such a region can hold "
                    "little tissue. " if words.title == "IDC" else ": a label cannot be read from what is not there. "))
    if blank_called:
        text += (f"A mostly blank {words.image} called {run.positive_name} ({_names(blank_called)}) shows a model "
                 f"reacting to something other than {'tissue' if words.stained_tissue else 'what the image shows'}. ")
    return text + "A heatmap shows where a model looked, not where the disease is."


def slides_text(table: pd.DataFrame) -> str:
    """The slide maps' patients by split (``table`` from :func:`bclib.evaluation.mosaic.slides`)."""
    if not len(table):
        return ("no patient of this dataset could be placed on a slide: only IDC's file names give each patch's "
                "position on its slide.")

    def describe(rows: pd.DataFrame) -> str:
        return ", ".join(f"{row['patient']} ({row['patches']} patches, {row['positive_fraction']:.0%} positive, mean "
                         f"probability {row['mean_probability']:.2f}, within-slide AUC "
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
        one = len(test) == 1
        if len(learnt):
            which = f"only {'this map shows' if one else 'these maps show'} the model on a new patient"
        else:
            which = "the model never saw " + ("this patient" if one else f"any of the {len(test)}")
        parts.append(f"{'the held-out test patient' if one else 'the held-out test patients'} {describe(test)}: "
                     f"{which} (a test patient's folder here is a partial sample of its slide, hence the gaps)")
        parts.extend(_slide_readings(test))
    else:
        parts.append("no test patient is shown: add a test patient's id to `slide_patients` for an honest map")
    return "; ".join(parts) + "."


def _slide_readings(test: pd.DataFrame, off_by: float = 0.25, few: int = 10) -> list[str]:
    """What the test patients' numbers say: a mean probability far from the positive share, an AUC on few positives."""
    readings = []
    shift = test["mean_probability"] - test["positive_fraction"]
    for rows, verb in ((test[shift > off_by], "over-calls"), (test[shift < -off_by], "under-calls")):
        if len(rows):
            readings.append(f"the model {verb} {_names([str(patient) for patient in rows['patient']])}: a mean "
                            f"probability more than {off_by:.2f} {'above' if verb == 'over-calls' else 'below'} the "
                            "positive share")
    positives = (test["positive_fraction"] * test["patches"]).round().astype(int)
    thin = test[(positives < few) & test["roc_auc"].notna()]
    for (_, row), count in zip(thin.iterrows(), positives[thin.index]):
        patches = _plural(int(count), "positive patch", "positive patches")
        readings.append(f"{row['patient']}'s within-slide AUC rests on {patches}, so it says little")
    return readings


def memoriser_text(series: Any, words: DatasetWords = IDC_WORDS) -> str:
    """What the image-level split did to the memoriser's test AUC over the seeds, and why (``series`` from
    :func:`bclib.evaluation.leakage.memoriser_lesson`)."""
    result, neighbours = series.difference, series.neighbours
    if not result.get("test_patients_seen", 1):
        return ("no test patient has a second image that could move into training (one image per test patient "
                "here), so the lesson cannot be measured on this data. Where a dataset gives no patient ids and each "
                "image counts as its own patient, that does not mean it cannot leak: images of one person may sit "
                "on both sides of its split, and nothing here can check it.")
    gap, interval = result["difference"], result["ci"]
    text = (f"over {_plural(result['seeds'], 'seed')} (each moves a different half of every test patient's "
            f"{words.images} into training), {result['k']} nearest neighbours on colour statistics score a mean test "
            f"ROC-AUC of {result['b']:.3f} after the image-level split and {result['a']:.3f} after the patient-level "
            f"one, on the same {result['n_images']} held-out {words.images} of {result['n_patients']} patients: a "
            f"difference of {gap:+.3f} ")
    text += ("(no interval: too few patients). " if interval is None else
             f"({ci_text(*interval, signed=True)}, the same patients resampled for every seed). ")
    if result["excludes_zero"] and gap > 0:
        text += ("The image-level split flatters this model beyond noise: it rewards recognising patients rather "
                 "than the disease, and any test number from such a split is optimistic by about this much. ")
    elif result["excludes_zero"]:
        text += f"The leaky copy scored lower, beyond noise: the {words.images} it gave up were worth more. "
    else:
        text += ("The interval includes zero: on this data an image-level split does not measurably inflate "
                 "this model's test AUC. ")
    share, chance = neighbours["same_patient_share"], neighbours["chance_same_patient_share"]
    same, other = neighbours["agreement_same_patient"], neighbours["agreement_other_patients"]
    text += (f"Why: {share:.1%} of the leaky model's nearest training {words.images} come from the held-out "
             f"{words.image}'s own patient, {share / chance:.0f} times what chance gives ({chance:.2%}), so "
             + ("it does recognise patients" if share > 2 * chance else "it hardly recognises patients"))
    if same is not None and other is not None:
        same, other = round(same, 2), round(other, 2)   # the gap below is read off the shares as printed
        text += (f"; those neighbours share the {words.image}'s label {same:.0%} of the time, other patients' "
                 f"{other:.0%}. ")
        if same <= other:
            text += (f"Seeing the patient does not help such a look-up here ({100 * (same - other):+.0f} percentage "
                     "points): the patient's own neighbours agree with its label no more often than others'")
        else:
            text += (f"Seeing the patient helps such a look-up by {100 * (same - other):.0f} percentage points, "
                     f"{'but only ' if share < 0.1 else 'and '}{share:.1%} of the look-ups find the patient, so the "
                     f"expected gain is about {share * (same - other):.2%} of the votes")
    return text + (f". How much a split leaks depends on how many {words.images} each patient gives to training and on "
                   f"how much more alike one patient's {words.images} are than two patients'. It is a lesson, never a "
                   "result.")


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
                 "test), some easier than others, and both splits are so small that both estimates are noisy; a "
                 "test number above the validation one is the luck of the draw, not a sign of a better model.")
    return text


def committee_text(members: list[str], best: str, test_changes: dict[str, dict], val_change: dict,
                   benchmark_list: str | None = None, words: DatasetWords = IDC_WORDS) -> str:
    """The committee (mean probability of ``members``) against ``best``: paired differences on test
    (``test_changes``: metric -> :func:`~bclib.evaluation.bootstrap.paired_bootstrap_difference`, b = committee)
    and the validation ROC-AUC difference on which the choice is made; on IDC, the 2016 benchmark's numbers."""
    text = (f"the committee of {_names(members)} against {best}, the model chosen on validation, each at its own "
            "Youden threshold chosen on validation, on the same test patient resamples: "
            + " ".join(difference_text(change) for change in test_changes.values()))
    gain = val_change["difference"]
    if val_change["excludes_zero"] and gain > 0:
        text += (f" The choice is made on validation ROC-AUC, where the committee ranks higher too "
                 f"({difference_text(val_change)}), so choosing it rests on validation, not on test.")
    else:
        text += (f" The choice is made on validation ROC-AUC: {difference_text(val_change)} Validation ROC-AUC does "
                 "not show the committee ahead, so a choice made without looking at test would not pick it: what it "
                 "gains on test is a finding of this run, not a reason to switch.")
    if words.title == "IDC" and {"balanced_accuracy", "f1"} <= set(test_changes):
        text += (f" The committee reaches balanced accuracy {test_changes['balanced_accuracy']['b']:.3f} and F1 "
                 f"{test_changes['f1']['b']:.3f}; " + benchmark_reference(benchmark_list))
    return text
