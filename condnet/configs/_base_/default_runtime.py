# Logging, seeding and weight loading shared by every config (mmseg's default_runtime.py).
runner = dict(log_interval=50, seed=0, deterministic=False)
work_dir = None  # None: ./work_dirs/<config file name without .py>
load_from = None
resume_from = None
auto_resume = False
