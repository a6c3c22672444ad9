"""How the papers name things, mapped onto oodbench's config names."""

ID_DATASETS = {"CIFAR-10": "cifar10", "CIFAR-100": "cifar100", "SVHN": "svhn", "ImageNet": "imagenet"}

OOD_DATASETS = {
    "TinyImageNet (crop)": "tin_crop",
    "TinyImageNet (resize)": "tin_resize",
    "LSUN (crop)": "lsun_crop",
    "LSUN (resize)": "lsun_resize",
    "iSUN": "isun",
    "Uniform": "uniform",
    "Gaussian": "gaussian",
    "SVHN": "svhn",
    "Places365": "places365",
    "Textures": "textures",
    "iNaturalist": "inaturalist",
    "SUN": "sun",
    "Places": "places",
}

ARCHS = {"DenseNet-BC (L=100,k=12)": "densenet100", "WRN-28-10": "wrn28_10", "WRN-40-2": "wrn40_2"}

# Metric columns of the paper CSVs (percent) → oodbench result columns (fractions).
METRICS = {
    "fpr95": "FPR95",
    "detection_error": "Det. err",
    "auroc": "AUROC",
    "aupr_in": "AUPR-In",
    "aupr_out": "AUPR-Out",
}
