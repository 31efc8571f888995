"""The official patient-level IDC split of Janowczyk & Madabhushi (2016).

Source: A. Janowczyk and A. Madabhushi, "Deep learning for digital pathology image analysis:
A comprehensive tutorial with selected use cases", J Pathol Inform 7:29 (2016),
doi:10.4103/2153-3539.186902. The tutorial's IDC use case published three patient lists
(``cases_train.txt``, ``cases_val.txt``, ``cases_test.txt``: 84, 29 and 49 patients), copied here
as Python data so the split needs no extra file. Patient IDs are the folder names of the Kaggle
``IDC_regular_ps50_idx5`` archive, in the order of the original lists.
"""
from __future__ import annotations

CITATION = (
    "Janowczyk A, Madabhushi A. Deep learning for digital pathology image analysis: "
    "a comprehensive tutorial with selected use cases. J Pathol Inform. 2016;7:29. "
    "doi:10.4103/2153-3539.186902"
)

#: What the 2016 benchmark reported on its test patients (AlexNet trained on its full training set).
PUBLISHED_RESULTS: dict[str, float] = {"balanced_accuracy": 0.8468, "f1": 0.7648}

#: Split name -> patient IDs of that split.
IDC_OFFICIAL_SPLITS: dict[str, tuple[str, ...]] = {
    "train": (
        "10304", "9346", "9029", "12911", "9043", "9044", "12884", "12752", "12819", "12890",
        "9024", "9124", "9178", "10291", "12871", "9257", "9323", "8974", "10302", "12932",
        "9266", "9325", "10285", "14079", "14304", "9037", "8980", "10264", "12749", "12891",
        "8915", "15633", "13024", "10288", "9081", "12820", "12930", "9255", "12882", "9267",
        "9177", "8865", "10262", "8957", "12811", "12901", "9259", "13692", "14213", "12931",
        "10256", "10254", "9174", "9041", "9175", "9321", "12818", "8951", "9173", "9126",
        "12872", "10275", "12900", "10293", "10308", "10268", "12869", "9320", "9228", "8975",
        "10258", "8955", "13689", "9256", "14212", "9383", "12822", "9123", "9265", "9083",
        "12750", "10257", "8913", "15902",
    ),
    "val": (
        "13688", "9381", "16554", "12867", "12880", "9076", "12626", "10299", "8959", "9023",
        "15473", "12896", "13591", "13461", "9078", "9324", "9022", "8956", "9036", "10260",
        "10269", "10261", "8917", "10277", "12875", "16896", "9345", "8914", "8867",
    ),
    "test": (
        "12909", "9382", "9075", "9290", "12881", "12895", "8864", "14191", "10259", "10274",
        "10303", "12907", "9225", "13402", "10295", "10306", "9176", "13023", "12821", "10307",
        "9322", "9073", "12905", "13106", "12906", "13401", "13403", "10292", "9261", "8916",
        "8918", "9254", "15515", "13458", "16550", "9250", "9347", "14081", "12826", "13460",
        "10276", "10273", "14189", "9181", "13687", "10286", "10255", "10301", "9125",
    ),
}
