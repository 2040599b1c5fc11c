"""Train and fine-tune the node's RWKV-4 models in plain PyTorch (CPU or CUDA, no custom kernels).

api      the stable Python API: TrainConfig, TokenData, TrainResult, train_model, train_lora,
         evaluate_model
model    RWKV-4 as an nn.Module whose parameters carry the raw `.pth` key names
wkv      the WKV recurrence: the step form (the package's) and the chunked parallel form
data     deterministic batches (seeded, state saved) and validation windows
loop     the training loop: schedule, clipping, truncated BPTT, checkpoints and resume
lora     LoRA adapters on the att/ffn matrices (the file format: services.inference.lora)
cli      `python -m avatario_tools.train train | lora | merge | eval`
"""
