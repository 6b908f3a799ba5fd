import json

import pytest

from distill_jax import text


def test_default_vocab_matches_wav2vec2_large_robust_ft_libri_960h():
  expected = ["<pad>", "<s>", "</s>", "<unk>", "|"] + list("ETAONIHSRDLUMWCFGYPBVK'XJQZ")
  assert text.DEFAULT_VOCAB == {t: i for i, t in enumerate(expected)}
  tok = text.CharTokenizer()
  assert (tok.blank_id, tok.word_delim_id, tok.vocab_size) == (0, 4, 32)


@pytest.mark.parametrize("raw,expected", [
    ("Hello, world!", "HELLO WORLD"),
    ("It's   a dog's life.", "IT'S A DOG'S LIFE"),
    ("The dogs' tails 'wagged'", "THE DOGS' TAILS WAGGED"),
    ("Café naïve façade", "CAFE NAIVE FACADE"),
    ("twenty-one well-known", "TWENTY ONE WELL KNOWN"),
    ("I have 21 cats", "I HAVE TWENTY ONE CATS"),
    ("In 1887 he came 1st", "IN EIGHTEEN EIGHTY SEVEN HE CAME FIRST"),
    ("It costs 3.5 pounds", "IT COSTS THREE POINT FIVE POUNDS"),
    ("salt & pepper", "SALT AND PEPPER"),
    ("\u201cQuoted\u201d \u2018smart\u2019 it\u2019s", "QUOTED SMART IT'S"),
    ("...!?", ""),
])
def test_normalize(raw, expected):
  assert text.normalize(raw) == expected
  assert text.normalize(expected) == expected  # idempotent


def test_digits_rejected_when_not_spelled():
  with pytest.raises(text.TextError, match="digits"):
    text.normalize("route 66", spell_numbers=False)


def test_encode_decode_roundtrip_and_word_delimiter():
  tok = text.CharTokenizer()
  ids = tok.encode("HI THERE")
  assert ids[2] == tok.word_delim_id
  assert tok.decode(ids) == "HI THERE"
  assert tok.decode([0, 0] + ids + [0]) == "HI THERE"  # specials dropped


def test_out_of_vocabulary_character_is_named():
  with pytest.raises(text.TextError, match="'Ä'"):
    text.CharTokenizer().encode("ÄPFEL")


def test_vocab_json_roundtrip(tmp_path):
  tok = text.CharTokenizer()
  path = tok.save(str(tmp_path))
  assert json.load(open(path)) == text.DEFAULT_VOCAB
  assert text.CharTokenizer.from_file(str(tmp_path)).vocab == tok.vocab


def test_vocab_with_gaps_or_without_blank_is_rejected():
  with pytest.raises(ValueError, match="without gaps"):
    text.CharTokenizer({"<pad>": 0, "|": 2})
  with pytest.raises(ValueError, match="<pad>"):
    text.CharTokenizer({"|": 0, "A": 1})


def test_build_vocab_orders_by_frequency_and_mismatch_is_described():
  vocab = text.build_vocab(["ÜBER ÜBEL", "BE"])
  assert [t for t, _ in sorted(vocab.items(), key=lambda kv: kv[1])][:7] == [
      "<pad>", "<s>", "</s>", "<unk>", "|", "B", "E"]
  a, b = text.CharTokenizer(vocab), text.CharTokenizer()
  assert not a.is_compatible_with(b)
  assert "'B'" in a.describe_mismatch(b)


def test_only_latin_letters_are_folded():
  assert text.normalize("Straße Œuvre") == "STRASSE OEUVRE"
  assert text.normalize("Добрый день") == "ДОБРЫЙ ДЕНЬ"
  with pytest.raises(text.TextError, match="not in the vocabulary"):
    text.CharTokenizer().encode(text.normalize("Добрый"))
