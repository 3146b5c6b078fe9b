"""Published score files (strict loaders) and the comparison with ours."""

import io
import os
import tracemalloc

import numpy as np
import pytest

from heldout_tf.estimates import comparison
from heldout_tf.core import errors
from heldout_tf.estimates import published
from test_data import write_cifar_with_ids

N_TRAIN = 48


def write_npz(path, **arrays):
  np.savez(path, **arrays)
  return str(path)


def cifar_cscores(tmp_path, name="cifar10-cscores-orig-order.npz",
                  num_classes=10, n=50_000, seed=0, **overrides):
  rng = np.random.default_rng(seed)
  arrays = {"labels": rng.integers(0, num_classes, n).astype(np.int64),
            "scores": rng.uniform(size=n).astype(np.float32)}
  arrays.update(overrides)
  return write_npz(tmp_path / name, **arrays), arrays


@pytest.fixture(scope="module")
def shuffled_cifar(tmp_path_factory):
  """`(data_dir, original)`: tfds example k is original example original[k]."""
  data_dir = tmp_path_factory.mktemp("tfds")
  original = np.random.default_rng(7).permutation(N_TRAIN)
  labels = write_cifar_with_ids(data_dir, [f"train_{i}" for i in original])
  return str(data_dir), original, labels


# ------------------------------------------------------------------ loaders


def test_cifar_cscores_load_with_exactly_the_published_keys(tmp_path):
  path, arrays = cifar_cscores(tmp_path)
  loaded = published.load(path)
  assert isinstance(loaded, published.CScores)
  assert loaded.kind == published.CIFAR10_CSCORES
  np.testing.assert_array_equal(loaded.scores, arrays["scores"])
  np.testing.assert_array_equal(loaded.labels, arrays["labels"])
  assert loaded.filenames is None


def test_cifar100_mnist_and_imagenet_cscores(tmp_path):
  path, _ = cifar_cscores(tmp_path, "cifar100-cscores-orig-order.npz", 100)
  assert published.load(path).kind == published.CIFAR100_CSCORES
  mnist = tmp_path / "mnist-cscores.npy"
  np.save(mnist, np.linspace(0, 1, 60_000))
  loaded = published.load(str(mnist))
  assert loaded.scores.shape == (60_000,) and loaded.labels is None
  names = np.array(["n01440764_10026.JPEG", b"n01440764_10027.JPEG", "x.JPEG"],
                   dtype=object)  # Needs pickle: allowed for this key only.
  path = write_npz(tmp_path / "imagenet-cscores-with-filename.npz",
                   labels=np.array([0, 999, 5]), scores=np.array([.1, .2, .3]),
                   filenames=names)
  # Pickled filenames are read only when asked for, and only as strings.
  assert published.load(path).filenames is None
  loaded = published.load(path, unpickle_filenames=True)
  assert loaded.filenames.tolist() == ["n01440764_10026.JPEG",
                                       "n01440764_10027.JPEG", "x.JPEG"]
  # A string (not pickled) array is read without asking.
  path = write_npz(tmp_path / "imagenet-cscores-with-filename.npz",
                   labels=np.array([0, 1]), scores=np.array([.1, .2]),
                   filenames=np.array(["a.JPEG", "b.JPEG"]))
  assert published.load(path).filenames.tolist() == ["a.JPEG", "b.JPEG"]


class _RunsCommand:
  """Unpickling this calls os.system: what a crafted score file carries."""

  def __init__(self, marker):
    self.marker = marker

  def __reduce__(self):
    return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("name", ["imagenet-cscores-with-filename.npz",
                                  "anything.npz"])
def test_a_crafted_score_file_is_never_unpickled(tmp_path, name):
  marker = tmp_path / "pwned"
  names = np.empty(2, dtype=object)
  names[0], names[1] = "a.JPEG", _RunsCommand(marker)
  path = write_npz(tmp_path / name, labels=np.array([0, 1]),
                   scores=np.array([.1, .2]), filenames=names)
  assert published.load(path).filenames is None   # Not read by default.
  published.check_compatible(path, "imagenet-resnet50")
  with pytest.raises(published.PublishedFileError,
                     match="'filenames': refusing to unpickle .*system"):
    published.load(path, unpickle_filenames=True)  # Opted in: still refused.
  assert not marker.exists()
  # Nor may any other key of any file carry a pickle.
  path = write_npz(tmp_path / "cifar10-cscores-orig-order.npz",
                   labels=names, scores=np.zeros(50_000))
  with pytest.raises(published.PublishedFileError, match="refusing"):
    published.load(path)
  assert not marker.exists()


def test_infl_matrix_and_pairs(tmp_path):
  rng = np.random.default_rng(0)
  classes = {0: (np.array([0, 2, 4]), np.array([1, 3])),
             1: (np.array([1, 3, 5]), np.array([0, 2]))}
  arrays = {"tr_mem": rng.uniform(size=6), "tr_labels": np.array([0, 1] * 3),
            "tt_labels": np.array([1, 0, 1, 0])}
  for k, (tr, tt) in classes.items():
    arrays[f"infl_matrix_class{k}"] = rng.uniform(size=(len(tr), len(tt)))
    arrays[f"tr_classidx_{k}"] = tr
    arrays[f"tt_classidx_{k}"] = tt
  loaded = published.load(write_npz(tmp_path / "cifar100_infl_matrix.npz",
                                    **arrays))
  assert sorted(loaded.classes) == [0, 1]
  np.testing.assert_array_equal(loaded.classes[1].infl,
                                arrays["infl_matrix_class1"])
  pairs = published.load(write_npz(
      tmp_path / "cifar100_high_infl_pairs_infl0.15_mem0.25.npz",
      tr_idx=np.array([3, 4]), tt_idx=np.array([1, 2]),
      infl=np.array([.2, .3]), mem=np.array([.5, .6])))
  assert pairs.kind == published.PAIRS and pairs.dataset == "cifar100"
  np.testing.assert_array_equal(pairs.tt_idx, [1, 2])


def test_kind_is_detected_from_keys_when_renamed(tmp_path):
  path, _ = cifar_cscores(tmp_path, "mine.npz", 100)
  assert published.detect_kind(path) == published.CIFAR100_CSCORES
  path = write_npz(tmp_path / "p.npz", tr_idx=[1], tt_idx=[2], infl=[.2],
                   mem=[.3])
  assert published.detect_kind(path) == published.PAIRS
  path = write_npz(tmp_path / "other.npz", a=[1])
  with pytest.raises(published.PublishedFileError, match="not a known"):
    published.detect_kind(path)


@pytest.mark.parametrize("bad, message", [
    (dict(scores=None), r"missing key\(s\) \['scores'\]"),
    (dict(scores=np.zeros(49_999, np.float32)),
     r"key 'scores' has shape \(49999,\), expected \(50000,\)"),
    (dict(scores=np.zeros(50_000, np.int64)),
     "key 'scores' has dtype int64, expected floating point"),
    (dict(labels=np.zeros((50_000, 1), np.int64)),
     "key 'labels' has shape .*expected a vector"),
    (dict(labels=np.full(50_000, 10)),
     r"'labels' has values outside \[0, 10\)"),
    (dict(labels=np.array([1] * 50_000, dtype=object)),
     r"key 'labels': a pickled object array \(object\); refusing"),
])
def test_bad_cscore_files_name_file_and_key(tmp_path, bad, message):
  arrays = {"labels": np.zeros(50_000, np.int64),
            "scores": np.zeros(50_000, np.float32)}
  arrays.update(bad)
  arrays = {k: v for k, v in arrays.items() if v is not None}
  path = write_npz(tmp_path / "cifar10-cscores-orig-order.npz", **arrays)
  with pytest.raises(published.PublishedFileError, match=message) as e:
    published.load(path)
  assert str(e.value).startswith(path)
  assert isinstance(e.value, errors.HeldoutError)


def test_bad_infl_matrix_and_pairs(tmp_path):
  path = write_npz(tmp_path / "cifar100_infl_matrix.npz", tr_mem=np.zeros(4),
                   tr_labels=np.zeros(4, int), tt_labels=np.zeros(2, int),
                   infl_matrix_class0=np.zeros((2, 2)),
                   tr_classidx_0=np.array([0, 1, 2]),
                   tt_classidx_0=np.array([0, 1]))
  with pytest.raises(published.PublishedFileError,
                     match=r"'infl_matrix_class0' has shape \(2, 2\), "
                     r"expected \(3, 2\)"):
    published.load(path)
  path = write_npz(tmp_path / "mnist_high_infl_pairs_infl0.15_mem0.25.npz",
                   tr_idx=np.array([1, 2]), tt_idx=np.array([1]),
                   infl=np.zeros(2), mem=np.zeros(2))
  with pytest.raises(published.PublishedFileError, match="'tt_idx' has shape"):
    published.load(path)


def test_fifo_and_non_npz_are_refused_without_blocking(tmp_path):
  fifo = tmp_path / "cifar10-cscores-orig-order.npz"
  os.mkfifo(fifo)
  with pytest.raises(published.PublishedFileError, match="not a regular file"):
    published.load(str(fifo))
  text = tmp_path / "cifar100_infl_matrix.npz"
  text.write_text("hello")
  with pytest.raises(published.PublishedFileError, match="not an npz file"):
    published.load(str(text))
  with pytest.raises(errors.PathError, match="cannot read"):
    published.load(str(tmp_path / "mnist-cscores.npy"))


def test_a_compressed_bomb_is_refused_before_it_inflates(tmp_path):
  # 256 MiB of float32 zeros deflate to ~256 KiB; the file's kind fixes
  # 50 000 scores, so the member is refused from its header.
  path = str(tmp_path / "cifar10-cscores-orig-order.npz")
  np.savez_compressed(path, labels=np.zeros(50_000, np.int64),
                      scores=np.zeros(64 << 20, np.float32))
  assert os.path.getsize(path) < 1 << 20
  tracemalloc.start()
  try:
    with pytest.raises(published.PublishedFileError,
                       match=r"'scores' has shape \(67108864,\), expected "
                       r"\(50000,\)"):
      published.load(path)
    peak = tracemalloc.get_traced_memory()[1]
  finally:
    tracemalloc.stop()
  assert peak < 16 << 20


def test_npy_declaring_a_trillion_scores_is_refused(tmp_path):
  path = tmp_path / "mnist-cscores.npy"
  header = io.BytesIO()
  np.lib.format.write_array_header_1_0(
      header, {"descr": "<f8", "fortran_order": False, "shape": (10**12,)})
  path.write_bytes(header.getvalue() + bytes(800))
  with pytest.raises(published.PublishedFileError,
                     match=r"'scores' has shape \(1000000000000,\), "
                     r"expected \(60000,\)"):
    published.load(str(path))


@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_truncated_or_bit_flipped_files_name_the_file(tmp_path, damage):
  path, _ = cifar_cscores(tmp_path)
  data = bytearray(open(path, "rb").read())
  if damage == "truncate":
    data = data[:len(data) // 2]
  else:  # A byte of the scores' data: the CRC-32 no longer matches.
    data[len(data) - 5000] ^= 0xFF
  with open(path, "wb") as f:
    f.write(data)
  with pytest.raises(published.PublishedFileError) as e:
    published.load(path)
  assert str(e.value).startswith(path)


# ------------------------------------------------------------------ compare


def test_correlate_excludes_and_counts_nans():
  x = np.array([1., 2., 3., 4., np.nan, 6.])
  y = np.array([-1., -8., -27., np.nan, np.nan, -216.])
  c = comparison.correlate(x, y)  # y = -x**3 where both are finite.
  assert (c.n, c.num_nan_ours, c.num_nan_published) == (4, 1, 1)
  assert c.spearman == pytest.approx(-1.0)
  assert -1.0 < c.pearson < -0.9


def test_jaccard_of_pair_sets():
  score, n_ours, n_published, both = comparison.jaccard(
      ([1, 2, 3, 4, 5], [0, 0, 0, 1, 1]),
      ([1, 2, 3, 9, 9, 9], [0, 0, 0, 1, 2, 3]))
  assert (n_ours, n_published, both) == (5, 6, 3)
  assert score == pytest.approx(3 / 8)


def test_compare_cscores_maps_original_to_tfds_order(shuffled_cifar,
                                                     tmp_path, monkeypatch):
  data_dir, original, tfds_labels = shuffled_cifar
  monkeypatch.setitem(published.NUM_EXAMPLES, published.CIFAR10_CSCORES,
                      N_TRAIN)
  rng = np.random.default_rng(1)
  published_scores = rng.uniform(size=N_TRAIN)  # original order
  published_labels = np.empty(N_TRAIN, np.int64)
  published_labels[original] = tfds_labels
  path, _ = cifar_cscores(tmp_path, n=N_TRAIN, scores=published_scores,
                          labels=published_labels)
  ours = published_scores[original] ** 3  # tfds order, monotone transform.
  ours[5] = np.nan
  plot = tmp_path / "plot.png"
  report = comparison.compare(
      {"cscores": ours, "labels": tfds_labels}, path,
      experiment="cifar10-inception", data_dir=data_dir, plot_path=str(plot))
  assert "C-scores: Spearman 1.0000, Pearson 0.9" in report
  assert f"over {N_TRAIN - 1} examples (1 excluded as NaN: 1 ours" in report
  assert f"labels: {N_TRAIN}/{N_TRAIN} agree\n" in report + "\n"
  assert plot.read_bytes().startswith(b"\x89PNG")
  assert sorted(os.listdir(tmp_path)) == [os.path.basename(path), "plot.png"]


def test_compare_memorization_and_pairs(tmp_path):
  rng = np.random.default_rng(2)
  mem = rng.uniform(size=6)
  path = write_npz(tmp_path / "cifar100_infl_matrix.npz", tr_mem=2 * mem + 1,
                   tr_labels=np.zeros(6, int), tt_labels=np.zeros(2, int),
                   infl_matrix_class0=np.zeros((6, 2)),
                   tr_classidx_0=np.arange(6), tt_classidx_0=np.arange(2))
  report = comparison.compare({"memorization": mem}, path,
                             experiment="cifar100-inception")
  assert "memorization: Spearman 1.0000, Pearson 1.0000 over 6" in report
  pairs = write_npz(tmp_path / "cifar100_high_infl_pairs_infl0.15_mem0.25.npz",
                    tr_idx=np.array([0, 0, 3, 5]), tt_idx=np.array([0, 1, 1,
                                                                    0]),
                    infl=np.full(4, .2), mem=mem[[0, 0, 3, 5]])
  ours = {"tr_idx": np.array([0, 3, 4]), "tt_idx": np.array([1, 1, 1]),
          "memorization": mem}
  report = comparison.compare(ours, pairs, experiment="cifar100-inception",
                             plot_path=str(tmp_path / "pairs.png"))
  assert "Jaccard 0.4000 (2 in both, 3 ours, 4 published)" in report
  assert "Spearman 1.0000, Pearson 1.0000 over 3 examples" in report
  assert (tmp_path / "pairs.png").exists()


def test_compare_errors(tmp_path):
  path, _ = cifar_cscores(tmp_path, n=50_000)
  with pytest.raises(published.CompareError, match="a cifar10 file but "
                     "--experiment cifar100-inception is cifar100"):
    comparison.compare({"cscores": np.zeros(50_000)}, path,
                      experiment="cifar100-inception")
  with pytest.raises(published.CompareError, match="no 'cscores'"):
    comparison.compare({"memorization": np.zeros(50_000)}, path,
                      experiment="cifar10-inception")
  mnist = tmp_path / "mnist-cscores.npy"
  np.save(mnist, np.zeros(60_000))
  with pytest.raises(published.CompareError, match="60000 published C-scores "
                     "but 5000 of ours"):
    comparison.compare({"cscores": np.zeros(5000)}, str(mnist),
                      experiment="mnist-mlp")
