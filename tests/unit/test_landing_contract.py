"""The landing contract on one listing of a landing zone's top level (`complete_batches`), the rule both
landing zones apply: which folders and archives are complete batches, and what each one's fingerprint is."""

import pytest

from resources.landing_zone import BatchListing, check_batch_name, complete_batches


def no_inner_markers(names: list[str]) -> list[str | None]:
    return [None] * len(names)


def test_a_ready_marker_beside_a_folder_completes_it_and_is_its_fingerprint() -> None:
    asked: list[list[str]] = []

    def inner(names: list[str]) -> list[str | None]:
        asked.append(names)
        return [None] * len(names)

    listing = complete_batches(["line_a", "line_b"], {"line_a.ready": "etag1:t1"}, inner)
    assert listing == [BatchListing("line_a", False, "etag1:t1")]
    assert asked == [["line_b"]]  # only the folder without `.ready` costs a look inside


def test_an_inner_success_marker_still_completes_a_folder() -> None:
    listing = complete_batches(["old_batch", "uploading"], {}, lambda names: ["etag2:t2" if n == "old_batch" else None for n in names])
    assert listing == [BatchListing("old_batch", False, "etag2:t2")]


def test_no_look_inside_when_every_folder_has_its_ready_marker() -> None:
    def inner(names: list[str]) -> list[str | None]:
        raise AssertionError(f"looked inside {names}")

    assert [b.name for b in complete_batches(["a", "b"], {"a.ready": "1", "b.ready": "2"}, inner)] == ["a", "b"]


def test_archives_are_batches_and_markers_without_folders_or_stray_files_are_not() -> None:
    stamps = {"line_zip.zip": "z", "line_tgz.tar.gz": "t", "gone.ready": "g", "notes.txt": "n", ".hidden.zip": "h"}
    listing = complete_batches([], stamps, no_inner_markers)
    assert listing == [BatchListing("line_tgz.tar.gz", True, "t"), BatchListing("line_zip.zip", True, "z")]


def test_folders_with_names_outside_the_contract_are_never_batches() -> None:
    stamps = {"bad name.ready": "1", "x.ready.ready": "2", "-dash.ready": "3"}
    assert complete_batches(["bad name", "x.ready", "-dash"], stamps, lambda names: ["s"] * len(names)) == []


@pytest.mark.parametrize("name", ["line.ready", "line.zip", "a b", "-x", ""])
def test_an_upload_under_a_name_outside_the_contract_is_refused(name: str) -> None:
    with pytest.raises(ValueError, match="batch name"):
        check_batch_name(name)
