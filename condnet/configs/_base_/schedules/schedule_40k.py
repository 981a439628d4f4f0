# mmseg's schedule_40k.py: SGD with poly decay for 40000 iterations; a checkpoint and an
# evaluation every 4000 iterations.
optimizer = dict(type="SGD", lr=0.01, momentum=0.9, weight_decay=5e-4)
lr_config = dict(policy="poly", power=0.9, min_lr=1e-4)
runner = dict(max_iters=40000)
checkpoint = dict(interval=4000)
evaluation = dict(interval=4000, metric="mIoU")
