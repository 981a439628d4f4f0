# Pascal Context, 59 classes (mmseg's pascal_context_59.py): random rescale of (520, 520)
# by 0.5-2x, 480x480 crops; tested at (520, 520) (the models slide 480x480 windows).
data = dict(
    dataset="pascal_context_59",
    root="data/VOCdevkit/VOC2010",
    train_split="train",
    val_split="val",
    img_scale=(520, 520),
    ratio_range=(0.5, 2.0),
    crop_size=(480, 480),
    cat_max_ratio=0.75,
    flip_prob=0.5,
    photometric=True,
    test_scale=(520, 520),
    samples_per_gpu=4,
    workers_per_gpu=4,
)
