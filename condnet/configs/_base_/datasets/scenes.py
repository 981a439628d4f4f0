# The generated scene set, 8 classes (condnet.data.scenes), made with
#   python tools/make_scenes.py --out data/scenes/cue --num-train 200 --num-val 50 --size 128
# (--colours region for the control set). Images are 128 pixels high and 96-170 wide, so
# the (256, 128) scale keeps them at their own size (the short side becomes 128).
# Training rescales by 0.75-1.5x (narrower than mmseg's 0.5-2x: a class's texture
# frequency is one of its cues) and crops 96x96. Tested at the generated size.
data = dict(
    dataset="scenes",
    root="data/scenes/cue",
    train_split="train",
    val_split="val",
    img_scale=(256, 128),
    ratio_range=(0.75, 1.5),
    crop_size=(96, 96),
    cat_max_ratio=0.75,
    flip_prob=0.5,
    photometric=True,
    test_scale=(256, 128),
    samples_per_gpu=8,
    workers_per_gpu=2,
)
