"""Mini-SSL shared machinery: backbone, data, queues, schedule, kNN monitor, linear evaluation,
logging, checkpoints and the training loop that every train_*.py script calls."""
