"""Tiny random models and a locally trained tokenizer for unit tests: no hub ids, no downloads."""

from __future__ import annotations

from pathlib import Path

CHAT_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

CORPUS = [
    "What is the birthplace of Alba Quirke? Alba Quirke was born in Lisbon.",
    "Who is Tomas Venn? Tomas Venn is a marine biologist from Oslo.",
    "The quick brown fox jumps over the lazy dog. 0123456789",
    "I don't know. I'm not sure about that person.",
    "Hello world, this is a tiny tokenizer for tests.",
]


def make_tokenizer(vocab_size: int = 320):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(CORPUS, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>", bos_token="<|endoftext|>"
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def make_model(tokenizer, seed: int = 0, hidden: int = 32, layers: int = 2):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=hidden * 2,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        tie_word_embeddings=False,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.bos_token_id,
    )
    model = LlamaForCausalLM(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model.eval()


def save_tiny_base(path: Path, seed: int = 0, hidden: int = 32, layers: int = 2) -> Path:
    tokenizer = make_tokenizer()
    model = make_model(tokenizer, seed=seed, hidden=hidden, layers=layers)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def make_lora_adapter(base_dir: Path, out_dir: Path, seed: int = 0, r: int = 4, targets="all-linear",
                      alpha: float | None = None, use_rslora: bool = False, base_fingerprint: str | None = None) -> Path:
    """A PEFT LoRA adapter with random (non-zero) A and B on a saved tiny base; optional forgetctl.json sidecar."""
    import json

    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(base_dir), dtype=torch.float32)
    torch.manual_seed(seed)
    config = LoraConfig(r=r, lora_alpha=alpha or 2 * r, target_modules=targets, init_lora_weights=False,
                        use_rslora=use_rslora, task_type="CAUSAL_LM")
    peft_model = get_peft_model(model, config)
    with torch.no_grad():  # random B too, scaled so deltas are visible but the model stays sane
        for name, p in peft_model.named_parameters():
            if "lora_" in name:
                p.copy_(torch.randn_like(p) * 0.2)
    peft_model.save_pretrained(str(out_dir))
    if base_fingerprint is not None:
        (Path(out_dir) / "forgetctl.json").write_text(json.dumps({"schema": 1, "base_fingerprint": base_fingerprint}))
    return Path(out_dir)
