# ADE20K, 150 classes (mmseg's ade20k.py): random rescale of the (2048, 512) scale by
# 0.5-2x, 512x512 crops; tested at (2048, 512).
data = dict(
    dataset="ade20k",
    root="data/ade/ADEChallengeData2016",
    train_split="train",
    val_split="val",
    img_scale=(2048, 512),
    ratio_range=(0.5, 2.0),
    crop_size=(512, 512),
    cat_max_ratio=0.75,
    flip_prob=0.5,
    photometric=True,
    test_scale=(2048, 512),
    samples_per_gpu=4,
    workers_per_gpu=4,
)
