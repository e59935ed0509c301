"""Fetch the public datasets into the data-root layout, resumably (HTTP Range) and checked (sha256).

    python data/download.py --dataset gutenberg squad ud_ewt blimp sst2 babylm_10m --output_dir DATA_ROOT
        [--base_url http://mirror/]   # a mirror laid out like the data root: BASE/<path in data root>

Each file goes to <output_dir>/<path> (point $BERT_DATA_ROOT at output_dir to use it), downloaded first to
<path>.part, which a rerun continues with an HTTP Range request; it is renamed into place only once
its sha256 matches the manifest below (where the checksum is known); a file with mirrors is tried at
each in turn. Archives (SST-2, BabyLM) are then extracted into the same layout (BabyLM keeps its
*.train / *.dev / *.test names, which data/preprocess.py reads as --format babylm). Files already present
and verified are skipped.

gutenberg: the quick start's corpus, 87 Project Gutenberg books (84 train, 3 dev) as staged in the data
root: byte-identical to the blobs of rcdm-uga/Gutenberg_Text at commit GUTENBERG_COMMIT, fetched from
GitHub or its jsDelivr mirror and checked against the sha256 in data/gutenberg_manifest.tsv (which also
gives each book's Project Gutenberg eBook number and its path in that repository).
"""

import hashlib
import http.client
import os
import shutil
import sys
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from utils.errors import ArgumentParser, UserError, run_cli  # noqa: E402

CHUNK = 1 << 20
RETRIES = 3


@dataclass(frozen=True)
class Remote:
    url: str  # official address
    path: str  # where it goes under the data root (and where a --base_url mirror serves it)
    sha256: str | None = None  # None where no official checksum is known
    extract: dict = field(default_factory=dict)  # archive member prefix -> folder under the data root
    rename_suffix: str | None = None  # give extracted files this suffix
    mirrors: tuple = ()  # other addresses serving the same bytes, tried in turn after url


SQUAD = "https://rajpurkar.github.io/SQuAD-explorer/dataset/"
UD = "https://raw.githubusercontent.com/UniversalDependencies/UD_English-EWT/r2.16/"
BLIMP = "https://raw.githubusercontent.com/alexwarstadt/blimp/master/data/"
BABYLM_2023 = "https://github.com/babylm/babylm.github.io/raw/main/babylm_data.zip"  # ELC-BERT's data
# BLiMP: paradigm:sha256 of data/<paradigm>.jsonl at alexwarstadt/blimp@3e56b06
BLIMP_SHA256 = """
adjunct_island:ecc71c452516de03deeb9262b4203e45220dc52727327a08eef07c79c01eac8b
anaphor_gender_agreement:fd7d6e47196fa1310a251d3aa88ae9a62bb64d3cec35fc02617229d5799767e1
anaphor_number_agreement:05c16b8bfe4feb5b3552dc2c53d1742ce0c91d9a1c896684335bdddd4373cc9b
animate_subject_passive:245e91961cf597150244c3945c6d0033e691b27ba6cf298c62920d355426e70c
animate_subject_trans:a7bffeda200f648c33dd215d91d8f5756fcd1e3f410bab467f1ed9235f215850
causative:2e1006cc24094a3049586888105b22181d77e09e11dea65a326b49977bb366f1
complex_NP_island:1c92472731dd9a21eb222d64bee756042a3763c3797b5283d5b84ab8e3cbb74c
coordinate_structure_constraint_complex_left_branch:47e0e04efeb320449a8eb2ac722b895041a8609580fec2880dbc719f50fba194
coordinate_structure_constraint_object_extraction:d01c27a7a893f3ec071a7913efa504d297671d86a987f26ddb565de914db2fd7
determiner_noun_agreement_1:f48065fd760d0fd1a895012860d38bdf3c2ac115cd221e521684cc430c0f1855
determiner_noun_agreement_2:8ae7eff7c7bd384ff5ef3113984834f4d78b34559203aa9d5cb14ea8394291a9
determiner_noun_agreement_irregular_1:4f350e88db9e29e53ae96f1f0b5991c7809fd4fd403190907330b721e1e6e264
determiner_noun_agreement_irregular_2:d688af0ccd0614d24a936e0929276784f37554f3ad3e247c3bade8dcaa9099df
determiner_noun_agreement_with_adj_2:8d2828d7dfbfc3f7191024514060fedb033ea2e232304f63448c33051a85d2b3
determiner_noun_agreement_with_adj_irregular_1:1f4c6e42a48f4220afec629679641479feac3883cd7fa346d9e9e129cd7e8f55
determiner_noun_agreement_with_adj_irregular_2:aa3f297a7ce0c03b5fc00458834f89e54eb855973be098497f766a390b4bc669
determiner_noun_agreement_with_adjective_1:2c3de4e7b7aea499fb7cf1b23b9c3b63662289880f991b9ffabe5ceb94cf7430
distractor_agreement_relational_noun:37c1553f4c6594b162256edce0f6b40bad1898b311c8aaa69605b526b6494a34
distractor_agreement_relative_clause:854728b6db8f23f12583f7332b654835351eaedb50783e6f2a3bf6c101b8c422
drop_argument:e262339a262a57a8f56dc41941ee1dc32c62eb97054b27d33cd8c356a6e62064
ellipsis_n_bar_1:3cc0bcf91631a4476ce573ea9dbf9627d52efbe071c26019e2c2448b68769d09
ellipsis_n_bar_2:3dfc2b378ea4867186917ec9cce5ce927e4d3bb6addf018bc31b870dd2aa8474
existential_there_object_raising:3781bfd54ec1208fc634f4d365189f948ec246526a7345b5148dd3ab6023ff4f
existential_there_quantifiers_1:4bd0f6dee3c1824b51b0dafb9fce2b00933e8053fcd4a7b99b6202e1b8b49f9e
existential_there_quantifiers_2:b1a80f4ebebae90a90927259f95b680059020e6bb4e38e64a41eb8e53bc3f617
existential_there_subject_raising:7c6f5b13225f73a777755c1948beef5cfa31d135ae8a0e7ba8853d256fbece23
expletive_it_object_raising:15ed3a52c978ecfe5eda7f64b0304b5bd133439cccb2c97fde20834f39874c93
inchoative:d9389a7130ca84c6f920c9d892cc60c1b20f378d28e7041b1c53ae589fc84f1d
intransitive:9af9f3f30c891cd21623922b62fd97685552b4ae94a6cfd5617a5f0cb0f731b3
irregular_past_participle_adjectives:5e490be0723989499391ac14d11b3bb6677f4b470514486b2db3fbfe76d56b3c
irregular_past_participle_verbs:75a990117c1a403d3b479e0fbe170f6919c2408def738ffcea8c62b49b70a555
irregular_plural_subject_verb_agreement_1:0066174143671bffa54232d89254d14221afab666273edfefdfb625fbb75e226
irregular_plural_subject_verb_agreement_2:9b22db814e7b7251f4abafe8beb9616f2f46eaa58f7cdb701cbc737cc8f1a124
left_branch_island_echo_question:7dadbe3c5a5ceadb78b9408807ac88230ddd748abfe8de8121f064e2bce94ad8
left_branch_island_simple_question:e2a64b8a1b7b8d94f931018cf9325836e9c79953a01379233da255eac5e8cd71
matrix_question_npi_licensor_present:657c9d6e6d50a9cd651881fcbc57cef2fd998611f6f53158ed05e48822fcd2b5
npi_present_1:9aa85dc5c2b0d85ea51f21db50d6d327ab5b45d1669e386d54b1360d3ac954af
npi_present_2:52fcfa230a40ae27998273cc08ecd062aad17025c92389df3404a85ed519909b
only_npi_licensor_present:475c6595187a32e4dcfb868d3db90394e89669a94a9312ebd60f88dad1665f1c
only_npi_scope:ca1f0671643e37936515f02125036bc2904ab9b35c4689b0e7a3ea3914e571f6
passive_1:e9374307bca5c24e9df18597a0859f7fb5ca4cfe5f136ec894d1ba69f4c90116
passive_2:4d49e438185bed4122a252dd9ee69bc8eccb2fe6c1b09ccc78198fd925fed8c5
principle_A_c_command:74c8111666542c797dee1c38c9e432b0b65751dfa0faa51874a990f2cbfc76fc
principle_A_case_1:7efb5246fe315dc2cf56b80739783cffcddee9e52650716cf5aa0f6987f7644d
principle_A_case_2:5de6db4c21a8433bc1f1030e81d5ee151efce02078460f7de7ca5e9566afd914
principle_A_domain_1:2276dc35a51396c7d11a401e378e0f4b31cd10d7916c73e9a361703cb96eddc5
principle_A_domain_2:9d14e5ae911fb8ddf571484ef2d6a6e6a053765c1c6d34253aec2c11f7d7306a
principle_A_domain_3:a0d66b9d8541ab1df08f629161c6c4e8bca3aa2693eaa342edd2097e6b579bdd
principle_A_reconstruction:65dc403c4d6e9a609f2c4cc2ec6c8baa05cf6fce89b920a816b0d9932204b2a3
regular_plural_subject_verb_agreement_1:1a18d94062c8e792c0a200a3b00dff0e051a92bb084c05e9b5e5c73bee32a620
regular_plural_subject_verb_agreement_2:e5b4668811e63b00ac4c9569cb9553281a39c21df43256905ad78e59ae24942c
sentential_negation_npi_licensor_present:c43405aca13ba4aa6ad87f9b051e4ba5fc458f24e683cfe0af23e6e09ec7268b
sentential_negation_npi_scope:6c341ccc39c94bea45c0412986751bf2f6eca48626728e30e23d2b6a22c8b949
sentential_subject_island:a286b67cc5912aafeb06750b38923abf3338786ffa4309e0a6a07b1dbe2444bd
superlative_quantifiers_1:bebc5c5ff28cf226cc35293c60cde1fcf7565a7b58cb219d01ac8908b952a497
superlative_quantifiers_2:4bef08f3e6bd3fbb46021dda34000f3c00222c5576babe4882a8541f6820a106
tough_vs_raising_1:8eb3a1ecbdbd969c5b77e2f85b12a39d33723bdc58d673e5067bb456da91d0e5
tough_vs_raising_2:a6db2f24a8aee0c90a9be63e6bb6787fe04e990c518761115f69f27c7438b5ae
transitive:48de2025571897c7590659c793d2d1ce85c247808d4199bad60f66cf2eb179ef
wh_island:77824ca8c0008fb7a204e785ca2dcee1b2803f666bb545bd95cb8a51e04f1a4c
wh_questions_object_gap:685c74eb8c199f30a24bba1bfabf9d9dff7962a64430e62b9b5f61d5369241ff
wh_questions_subject_gap:3c33e4efc7182824211ff3288694cf010f4ce84f85c8df67410d784139c722b3
wh_questions_subject_gap_long_distance:985bae202dbc5566b9b5c51bd77dd9d1dbcd87e0f38e008c34a11d7aa07db788
wh_vs_that_no_gap:6a25d0d1499e9f522696a62ce9dba8c49f58c5446fddc6d852bf562d1016163c
wh_vs_that_no_gap_long_distance:968faf59602a67f9cfd7c2e91a314a3f7342fd5daf41c21cadd25288fc85fdcf
wh_vs_that_with_gap:56f1ca988a8ca368234f12359792c414fdfec2891154e3f8ce6404da1d3f3212
wh_vs_that_with_gap_long_distance:3cb19100d6384264e512801e96c20e172a3c0c7778276b80ed60c65e97b86ab5
"""


GUTENBERG_COMMIT = "a0b16d35a9851168ce9ac649851c17b7ab08d48e"
GUTENBERG_MANIFEST = Path(__file__).with_name("gutenberg_manifest.tsv")


def _gutenberg() -> list[Remote]:
    """One Remote per book of data/gutenberg_manifest.tsv (file, pg_ebook_id, sha256, source_path_in_repo)."""
    rows = [line.split("\t") for line in GUTENBERG_MANIFEST.read_text().splitlines()[1:] if line]
    remotes = []
    for file, _ebook, sha, source in rows:
        quoted = urllib.parse.quote(source)
        remotes.append(Remote(
            f"https://raw.githubusercontent.com/rcdm-uga/Gutenberg_Text/{GUTENBERG_COMMIT}/{quoted}",
            f"corpus/{file}", sha,
            mirrors=(f"https://cdn.jsdelivr.net/gh/rcdm-uga/Gutenberg_Text@{GUTENBERG_COMMIT}/{quoted}",),
        ))  # fmt: skip
    return remotes


def _babylm(subset: str) -> Remote:
    prefixes = {f"babylm_data/babylm_{subset}/": f"corpus/babylm/{subset}/"}
    prefixes.update({f"babylm_data/babylm_{s}/": f"corpus/babylm/{s}/" for s in ("dev", "test")})
    return Remote(BABYLM_2023, "corpus/babylm/babylm_data.zip", None, prefixes)


DATASETS = {
    "gutenberg": _gutenberg(),
    "squad": [
        Remote(SQUAD + "train-v1.1.json", "squad/train-v1.1.json",
               "3527663986b8295af4f7fcdff1ba1ff3f72d07d61a20f487cb238a6ef92fd955"),
        Remote(SQUAD + "dev-v1.1.json", "squad/dev-v1.1.json",
               "95aa6a52d5d6a735563366753ca50492a658031da74f301ac5238b03966972c9"),
    ],
    "ud_ewt": [
        Remote(UD + name, "ud_ewt/" + name, sha)
        for name, sha in [
            ("en_ewt-ud-train.conllu", "3fb78e2b55482c8ee00caa653af436c88c9e5bc9a73ce26e4ae3ddc79d2b7e7b"),
            ("en_ewt-ud-dev.conllu", "531a54ff90d6ab12201c5a50c3e78e6ddac4de69abc4bce5d275d3cd29efe2b6"),
            ("en_ewt-ud-test.conllu", "e266e515a0a7547657ed3d90d9ba46487d6bd251f27ad4269d4e8a427c8555cd"),
            ("LICENSE.txt", "b3d1b0f4c6ae151f7eb78738f46ebd5ee140f8a7f76501ba26af123140d35ae7"),
            ("README.md", "099677d6938869b4e855e6ec6548fc24ffeb5fce90e1cd985847f7049664f29e"),
            ("stats.xml", "1e1e44c4f97b181fc775b42f819895955db4bbda0eaabee01cb590ccf00e89b4"),
        ]
    ],
    "blimp": [
        Remote(f"{BLIMP}{name}.jsonl", f"blimp/data/{name}.jsonl", sha)
        for name, sha in (line.split(":") for line in BLIMP_SHA256.split())
    ],
    "sst2": [
        Remote("https://dl.fbaipublicfiles.com/glue/data/SST-2.zip", "sst2/SST-2.zip", None,
               {"SST-2/train.tsv": "sst2/", "SST-2/dev.tsv": "sst2/", "SST-2/test.tsv": "sst2/"}),
    ],
    "babylm_10m": [_babylm("10M")],
    "babylm_100m": [_babylm("100M")],
}  # fmt: skip


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def fetch(url: str, dest: Path, sha256: str | None, timeout: float = 60) -> None:
    """Download url to dest via dest.part, continuing a partial .part with an HTTP Range request."""
    part = dest.with_name(dest.name + ".part")
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        part.touch()
    except OSError as err:
        raise UserError(f"cannot write {part}: {err.strerror}") from None
    for attempt in range(RETRIES):
        have = part.stat().st_size
        request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                # 206: the server continues where we stopped; 200: it sends everything again
                mode = "ab" if have and response.status == 206 else "wb"
                expected, got = int(response.headers.get("Content-Length", -1)), 0
                with open(part, mode) as f:
                    while block := response.read(CHUNK):
                        f.write(block)
                        got += len(block)
                if 0 <= got < expected:  # the connection closed early: not an error to urllib
                    raise http.client.IncompleteRead(b"", expected - got)
            break
        except urllib.error.HTTPError as err:
            if err.code == 416 and have:  # the .part is already complete
                break
            raise UserError(f"could not fetch {url}: HTTP {err.code} {err.reason}") from None
        except (urllib.error.URLError, http.client.HTTPException, OSError) as err:  # dropped: retry
            if attempt == RETRIES - 1:
                reason = getattr(err, "reason", err)
                if part.stat().st_size == 0:
                    part.unlink()
                raise UserError(f"could not fetch {url} ({reason}); rerun to continue from {part}") from None
    if sha256 is not None:
        got = sha256_of(part)
        if got != sha256:
            part.unlink()
            raise UserError(f"{url}: sha256 {got} differs from the expected {sha256}; removed the download")
    os.replace(part, dest)


def extract(archive: Path, root: Path, prefixes: dict, rename_suffix: str | None) -> list[Path]:
    """Members under each prefix go into the prefix's folder (flat; a file member keeps its name)."""
    written = []
    try:
        with zipfile.ZipFile(archive) as zf:
            for member in zf.namelist():
                for prefix, folder in prefixes.items():
                    if member.startswith(prefix) and not member.endswith("/"):
                        name = Path(member).name
                        if rename_suffix:
                            name = Path(name).with_suffix(rename_suffix).name
                        target = root / folder / name
                        target.parent.mkdir(parents=True, exist_ok=True)
                        tmp = target.with_name(target.name + ".tmp")
                        with zf.open(member) as src, open(tmp, "wb") as dst:
                            shutil.copyfileobj(src, dst, CHUNK)
                        os.replace(tmp, target)
                        written.append(target)
    except zipfile.BadZipFile:
        raise UserError(f"{archive} is not a zip archive") from None
    if not written:
        raise UserError(f"{archive} holds none of {', '.join(prefixes)}")
    return written


def download(name: str, root: Path, base_url: str | None = None, force: bool = False) -> list[Path]:
    """Fetch (and extract) one dataset into root; returns the paths written or verified."""
    if name not in DATASETS:
        raise UserError(f"--dataset {name!r} must be one of {', '.join(DATASETS)}")
    done = []
    for remote in DATASETS[name]:
        dest = root / remote.path
        urls = [base_url.rstrip("/") + "/" + remote.path] if base_url else [remote.url, *remote.mirrors]
        present = dest.is_file() and (remote.sha256 is None or sha256_of(dest) == remote.sha256)
        if force or not present:
            for i, url in enumerate(urls):
                try:
                    fetch(url, dest, remote.sha256)
                    break
                except UserError as err:  # unreachable or wrong bytes: the next mirror, if any
                    if i == len(urls) - 1:
                        raise
                    print(f"{err}; trying {urls[i + 1]}", file=sys.stderr)
            print(f"fetched {url} -> {dest}")
        done.append(dest)
        if remote.extract:
            done += extract(dest, root, remote.extract, remote.rename_suffix)
    return done


def main(argv=None):
    p = ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dataset", nargs="+", required=True, choices=[*DATASETS, "all"], help="what to fetch")
    p.add_argument(
        "--output_dir", required=True, help="data root to fill, e.g. the folder $BERT_DATA_ROOT names"
    )
    p.add_argument("--base_url", default=None, help="a mirror serving files at their data-root paths")
    p.add_argument("--force", action="store_true", help="download again even when present and verified")
    args = p.parse_args(argv)
    root = Path(args.output_dir)
    names = list(DATASETS) if "all" in args.dataset else args.dataset
    for name in names:
        paths = download(name, root, args.base_url, args.force)
        print(f"{name}: {len(paths)} files under {root}")


if __name__ == "__main__":
    run_cli(main)
