# The generated scene set, 8 classes (condnet.data.scenes), made with
#   python tools/make_scenes.py --out data/scenes --seed 0 --num-train 200 --num-val 50 --size 192
# Images are 192 pixels high and 144-255 wide, so the (384, 192) scale keeps them at about
# their own size (the short side becomes 192). Training rescales by 0.75-1.5x (narrower
# than mmseg's 0.5-2x: a class's texture frequency is one of its cues, and the runs on this
# set are short) and crops 128x128. Tested at the generated size.
data = dict(
    dataset="scenes",
    root="data/scenes",
    train_split="train",
    val_split="val",
    img_scale=(384, 192),
    ratio_range=(0.75, 1.5),
    crop_size=(128, 128),
    cat_max_ratio=0.75,
    flip_prob=0.5,
    photometric=True,
    test_scale=(384, 192),
    samples_per_gpu=8,
    workers_per_gpu=2,
)
