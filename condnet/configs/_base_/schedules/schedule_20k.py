# mmseg's schedule_20k.py: SGD with poly decay for 20000 iterations; a checkpoint and an
# evaluation every 2000 iterations.
optimizer = dict(type="SGD", lr=0.01, momentum=0.9, weight_decay=5e-4)
lr_config = dict(policy="poly", power=0.9, min_lr=1e-4)
runner = dict(max_iters=20000)
checkpoint = dict(interval=2000)
evaluation = dict(interval=2000, metric="mIoU")
