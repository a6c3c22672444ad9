"""How the papers name things, mapped onto oodbench's config names."""

ID_DATASETS = {"CIFAR-10": "cifar10", "CIFAR-100": "cifar100", "SVHN": "svhn", "ImageNet": "imagenet",
               "ImageNet-1k": "imagenet", "MNIST": "mnist"}

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

ARCHS = {"DenseNet-BC (L=100,k=12)": "densenet100", "DenseNet-BC (L=100, k=12)": "densenet100", "WRN-28-10": "wrn28_10",
         "WRN-40-2": "wrn40_2", "ResNet-50 (torchvision)": "resnet50", "MobileNet-v2 (torchvision)": "mobilenet_v2",
         "ResNet-34": "resnet34"}

# Our checkpoints (oodbench/models/registry.py) as a reader knows them.
CHECKPOINTS = {
    "odin_densenet10": "DenseNet-BC-100, ODIN's CIFAR-10 checkpoint",
    "odin_densenet100": "DenseNet-BC-100, ODIN's CIFAR-100 checkpoint",
    "dice_densenet_cifar10": "DenseNet-BC-100, DICE's CIFAR-10 checkpoint",
    "dice_densenet_cifar100": "DenseNet-BC-100, DICE's CIFAR-100 checkpoint",
}
CHECKPOINT_ID = {"odin_densenet10": "cifar10", "odin_densenet100": "cifar100", "dice_densenet_cifar10": "cifar10",
                 "dice_densenet_cifar100": "cifar100"}

# Our OOD set names as the tables print them, in a fixed column order.
OOD_LABELS = {"isun": "iSUN", "lsun_resize": "LSUN (resize)", "lsun_crop": "LSUN (crop)",
              "tin_resize": "TinyImageNet (resize)", "tin_crop": "TinyImageNet (crop)", "svhn": "SVHN",
              "places365": "Places365", "textures": "Textures", "gaussian": "Gaussian", "uniform": "Uniform",
              # near-OOD (OpenOOD v1.5's CIFAR benchmark); tin_near_*: stand-ins for its TIN lists (conf/ood/)
              "cifar100": "CIFAR-100", "cifar10": "CIFAR-10", "tin_near_c10": "TIN (near, stand-in)",
              "tin_near_c100": "TIN (near, stand-in)"}

# Metric columns of the paper CSVs (percent) → oodbench result columns (fractions).
METRICS = {
    "fpr95": "FPR95",
    "detection_error": "Det. err",
    "auroc": "AUROC",
    "aupr_in": "AUPR-In",
    "aupr_out": "AUPR-Out",
}

# The four MOS OOD sets of the ImageNet benchmark (ReAct, ASH) → our config names; "Average (4 sets)" is their mean.
IMAGENET_OOD = {"iNaturalist": "inaturalist", "SUN": "sun", "Places": "places", "Textures": "textures_imagenet"}
IMAGENET_AVERAGE = "Average (4 sets)"
