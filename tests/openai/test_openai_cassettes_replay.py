"""Every OpenAI cassette replays through the real SDK and default transport, uninstrumented."""

from __future__ import annotations

import pytest
import vcr
from openai_cassettes import CASSETTE_DIR, replay
from openai_wire import RECIPES, Recipe, make_client


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda r: r.name)
def test_sdk_parses_cassette_without_instrumentation(recipe: Recipe) -> None:
    with replay(recipe.name) as cassette:
        assert recipe.call(make_client(recipe)) == recipe.expected
    assert cassette.all_played


def test_every_cassette_file_has_a_recipe() -> None:
    on_disk = {path.stem for path in CASSETTE_DIR.glob("*.yaml")}
    assert on_disk == {recipe.name for recipe in RECIPES}


def test_request_outside_the_cassette_fails_instead_of_reaching_the_network() -> None:
    recipe = RECIPES[0]
    with replay("models_list"), pytest.raises(Exception) as raised:  # noqa: PT011
        recipe.call(make_client(recipe, max_retries=0))
    chain: list[BaseException] = []
    error: BaseException | None = raised.value
    while error is not None:  # openai < 3.x.y wraps it in APIConnectionError
        chain.append(error)
        error = error.__cause__
    assert any(isinstance(e, vcr.errors.CannotOverwriteExistingCassetteException) for e in chain)
