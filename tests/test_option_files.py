"""The option files made from templates (options/_templates/, scripts/generate_options.py) are current, and the
check that says so catches a hand-edited, a missing and an orphaned generated file."""
import glob
import importlib.util
import os
import shutil

import pytest
import yaml

from tests.conftest import REPO


def load_generator():
    spec = importlib.util.spec_from_file_location('generate_options', os.path.join(REPO, 'scripts',
                                                                                   'generate_options.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_generated_option_file_is_what_its_template_makes(capsys):
    generator = load_generator()
    assert generator.main(['--check']) == 0, capsys.readouterr().err
    assert len(generator.all_generated()) == 64  # the paper template's 36, LightBSR's 12, SAVL's 10, tiny's 6


def test_no_basicsr_option_file_is_hand_written():
    """Every file ``basicsr train / test -opt`` reads is made by a template; what stays hand-written is read by gsr's
    own commands: the study files (options/repro/, ``gsr repro``) and ``gsr evaluate``'s model lists."""
    generated = set(load_generator().all_generated())
    for path in glob.glob(os.path.join(REPO, 'options', '**', '*.yml'), recursive=True):
        relative = os.path.relpath(path, REPO)
        if relative.startswith(('options/_templates/', 'options/repro/', 'options/evaluate_')):
            continue
        assert relative in generated, f'{relative} is written by hand: make it from a template'


@pytest.mark.parametrize('name, protocol', [('test_lightbsr_aniso', 'blind-aniso'), ('test_lightbsr_iso', 'blind-iso'),
                                            ('test_savl_spatial', 'spatial')])
def test_protocol_test_files_read_the_folders_gsr_degrade_writes(name, protocol, tmp_path, small_photo_folder):
    """A generated test file's HR / LR folders, under one dataset's output folder, are what ``gsr degrade
    --protocol`` wrote there (one photograph)."""
    from gsr.tools.degrade import write_blind_sets, write_spatial_sets
    from gsr.utils.image_io import list_images
    hr = tmp_path / 'hr'
    hr.mkdir()
    shutil.copy(list_images(small_photo_folder)[0], hr)
    sets = yaml.safe_load(load_generator().all_generated()[f'options/{name}.yml'])['datasets']
    first = sets['test_1']['dataroot_gt'].split('/HR/')[0]  # the first dataset's output folder
    output = str(tmp_path / 'out')
    if protocol == 'spatial':
        write_spatial_sets(str(hr), output, progress=False)
    else:
        write_blind_sets(str(hr), output, protocol, progress=False)
    mine = [s for s in sets.values() if s['dataroot_gt'].startswith(first + '/')]
    written = {os.path.relpath(os.path.dirname(p), output) for p in glob.glob(f'{output}/LR_*/*/*.png')}
    assert {os.path.relpath(s['dataroot_lq'], first) for s in mine} == written
    assert all(os.path.isdir(os.path.join(output, os.path.relpath(s['dataroot_gt'], first))) for s in mine)


@pytest.fixture
def copied_repo(tmp_path, monkeypatch):
    """A copy of options/ with the generator pointed at it."""
    generator = load_generator()
    shutil.copytree(os.path.join(REPO, 'options'), tmp_path / 'options')
    monkeypatch.setattr(generator, 'REPO', str(tmp_path))
    monkeypatch.setattr(generator, 'TEMPLATES', str(tmp_path / 'options' / '_templates'))
    return generator, tmp_path


def test_the_check_names_a_hand_edited_a_missing_and_an_orphaned_file(copied_repo, capsys):
    generator, root = copied_repo
    edited = root / 'options' / 'train_rrdb_align.yml'
    edited.write_text(edited.read_text().replace('loss_weight: 1.0', 'loss_weight: 2.0'))
    (root / 'options' / 'test_msrn_baseline.yml').unlink()
    orphan = root / 'options' / 'train_rrdb_featmatch.yml'
    shutil.copy(root / 'options' / 'train_srresnet_featmatch.yml', orphan)
    assert generator.main(['--check']) == 1
    err = capsys.readouterr().err
    assert 'options/train_rrdb_align.yml: differs' in err
    assert 'options/test_msrn_baseline.yml: missing' in err
    assert 'options/train_rrdb_featmatch.yml: stamped generated, but no template makes it' in err
    # regenerating mends the first two; the orphan is the template writer's to remove
    assert generator.main([]) == 0
    capsys.readouterr()
    assert generator.main(['--check']) == 1
    assert capsys.readouterr().err.count('\n') == 2  # the orphan and the hint


def test_an_architectures_own_method_setting_and_a_composed_method_land_in_the_files(copied_repo):
    """The architecture's own setting of a method (SRResNet's Dropout p) and a composed method (tfd_align: TFD's
    options, then alignment's) land in the files as written."""
    generator, root = copied_repo
    files = {name: yaml.safe_load(text) for name, text in generator.all_generated().items()}
    assert files['options/train_srresnet_dropout.yml']['dropout'] == {'p': 0.7}
    assert files['options/train_rrdb_dropout.yml']['dropout'] == {'p': 0.5}
    tfd_align = files['options/train_srresnet_tfd_align.yml']
    assert tfd_align['paired'] and tfd_align['noise_free_twin'] and tfd_align['degradation']['noise_prob'] == 0.5
    assert list(tfd_align['train']['regularizers']) == ['l_det', 'l_feat', 'l_align', 'l_rff']
    test = files['options/test_swinir_tfd.yml']
    assert test['attach'] == files['options/train_swinir_tfd.yml']['attach']
    assert test['network_g'] == files['options/train_swinir_tfd.yml']['network_g']
    assert len(test['datasets']) == 40 and test['datasets']['test_40']['name'] == 'Manga109_b+n+j'


def test_a_comment_on_a_key_no_file_has_is_refused(copied_repo):
    """A comment whose key path is misspelt (or inside a one-line mapping) would silently vanish: it is an error."""
    generator, root = copied_repo
    template = root / 'options' / '_templates' / 'lightbsr.yml'
    text = template.read_text()
    template.write_text(text.replace('datasets.train.kernel_sets:', 'datasets.train.kernel_set:'))
    with pytest.raises(ValueError, match='datasets.train.kernel_set'):
        generator.all_generated()
    template.write_text(text)
    files = generator.all_generated()
    teacher = files['options/train_lightbsr_teacher_iso_encoder.yml'].split('\n')
    student = files['options/train_lightbsr_student_iso_encoder.yml'].split('\n')
    # a part's comment lands in the files of that part only, above its key
    line = teacher.index('    crops_per_image: 4')
    assert teacher[line - 1].startswith('    # ') and 'docs/LIGHTBSR.md' in ' '.join(teacher[line - 4:line])
    assert not any('positives are cut anywhere' in line for line in student)


def load_doc_generator():
    spec = importlib.util.spec_from_file_location('generate_options_doc',
                                                  os.path.join(REPO, 'scripts', 'generate_options_doc.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_options_page_is_what_the_option_classes_make(capsys):
    assert load_doc_generator().main(['--check']) == 0, capsys.readouterr().err


def test_every_gsr_models_options_have_a_table():
    from basicsr.utils.registry import MODEL_REGISTRY
    generator = load_doc_generator()
    with open(generator.TEMPLATE, encoding='utf-8') as f:
        tabled = {generator.option_class(m['cls']) for m in map(generator.MARKER.match, f.read().splitlines()) if m}
    models = [cls for _, cls in MODEL_REGISTRY if cls.__module__.startswith('gsr.')]
    assert models and all(cls.OPTIONS in tabled for cls in models), [cls.__name__ for cls in models]


def test_the_options_check_catches_an_edited_page_and_an_undocumented_key(tmp_path, monkeypatch, capsys):
    generator = load_doc_generator()
    page = tmp_path / 'OPTIONS.md'
    page.write_text(generator.generate().replace('| `usm_radius` | an integer | `50` |', '| `usm_radius` | an '
                                                                                         'integer | `40` |'))
    monkeypatch.setattr(generator, 'OUTPUT', str(page))
    assert generator.main(['--check']) == 1
    assert 'docs/OPTIONS.md differs' in capsys.readouterr().err
    template = tmp_path / 'template.md'
    template.write_text('# t\n<!-- options: gsr.data.batch_builder.BatchOptions -->\n')  # a class without descriptions
    monkeypatch.setattr(generator, 'TEMPLATE', str(template))
    assert generator.main(['--check']) == 1
    assert 'gsr.data.batch_builder.BatchOptions.copies has no description' in capsys.readouterr().err
