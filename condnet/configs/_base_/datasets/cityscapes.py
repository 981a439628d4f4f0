# Cityscapes, 19 classes (mmseg's cityscapes.py): random rescale of (2048, 1024) by 0.5-2x,
# 512x1024 crops; tested at (2048, 1024). Needs the *_labelTrainIds.png annotations:
# python tools/convert_cityscapes.py data/cityscapes
data = dict(
    dataset="cityscapes",
    root="data/cityscapes",
    train_split="train",
    val_split="val",
    img_scale=(2048, 1024),
    ratio_range=(0.5, 2.0),
    crop_size=(512, 1024),
    cat_max_ratio=0.75,
    flip_prob=0.5,
    photometric=True,
    test_scale=(2048, 1024),
    samples_per_gpu=2,
    workers_per_gpu=2,
)
