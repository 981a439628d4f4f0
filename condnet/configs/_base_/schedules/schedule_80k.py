# mmseg's schedule_80k.py: SGD with poly decay for 80000 iterations; a checkpoint and an
# evaluation every 8000 iterations.
optimizer = dict(type="SGD", lr=0.01, momentum=0.9, weight_decay=5e-4)
lr_config = dict(policy="poly", power=0.9, min_lr=1e-4)
runner = dict(max_iters=80000)
checkpoint = dict(interval=8000)
evaluation = dict(interval=8000, metric="mIoU")
