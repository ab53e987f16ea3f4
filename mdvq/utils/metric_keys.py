"""The metric keys that more than one module logs or reads (Lightning's `self.log` names, the
`metrics` of `summary.json`, the CSV/W&B columns). A stage's keys are `<stage>/<name>`, stage
one of train, val, test; the configs name the same keys as strings (`monitor: val/psnr`)."""

TRAIN_LOSS = "train/loss"
TRAIN_LOSS_EPOCH = "train/loss_epoch"
TRAIN_DEAD_CODES = "train/dead_codes"

VAL_PSNR = "val/psnr"
VAL_CODEBOOK_USAGE = "val/codebook_usage"
VAL_ACC = "val/acc"
VAL_VB = "val/vb"

TEST_PSNR = "test/psnr"
TEST_SSIM = "test/ssim"
TEST_CODEBOOK_USAGE = "test/codebook_usage"
TEST_ACC = "test/acc"
