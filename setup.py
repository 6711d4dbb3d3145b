"Packaging for optbook: metadata and dependencies come from settings.ini (nbdev 2)."
from configparser import ConfigParser
import setuptools

cfg = ConfigParser(delimiters=['='])
cfg.read('settings.ini', encoding='utf-8')
cfg = cfg['DEFAULT']

# settings.ini names the license nbdev's way; the metadata carries its SPDX expression (PEP 639, setuptools>=77),
# so no `License ::` classifier (deprecated in favour of the expression)
licenses = {'apache2': 'Apache-2.0'}
# the trove list's numbering: status 1 is 'Planning' ... 7 is 'Inactive' (https://pypi.org/classifiers/)
statuses = {1: 'Planning', 2: 'Pre-Alpha', 3: 'Alpha', 4: 'Beta', 5: 'Production/Stable', 6: 'Mature', 7: 'Inactive'}
status = int(cfg['status'])
if status not in statuses: raise ValueError(f"settings.ini status = {status}: must be 1..7 (the trove 'Development Status' numbers)")
reqs = lambda key: cfg.get(key, '').split()

viz, course, dev = reqs('viz_requirements'), reqs('course_requirements'), reqs('dev_requirements')
setuptools.setup(
    name=cfg['lib_name'],
    version=cfg['version'],
    description=cfg['description'],
    long_description=open('README.md', encoding='utf-8').read(),
    long_description_content_type='text/markdown',
    author=cfg['author'], author_email=cfg['author_email'],
    license_expression=licenses[cfg['license']],
    license_files=['LICENSE'],
    url=cfg['git_url'],
    project_urls={'Documentation': cfg['doc_host'] + cfg['doc_baseurl'], 'Source': cfg['git_url'],
                  'Issues': cfg['git_url'] + '/issues', 'Changelog': cfg['git_url'] + '/blob/main/CHANGELOG.md'},
    keywords=cfg['keywords'],
    classifiers=[f'Development Status :: {status} - {statuses[status]}',
                 f'Intended Audience :: {cfg["audience"]}', 'Intended Audience :: Education',
                 'Intended Audience :: Science/Research', f'Natural Language :: {cfg["language"]}',
                 'Operating System :: OS Independent', 'Programming Language :: Python :: 3',
                 'Topic :: Scientific/Engineering :: Artificial Intelligence', 'Typing :: Typed'],
    packages=setuptools.find_packages(include=['optbook', 'optbook.*']),
    package_data={'optbook': ['py.typed']},  # PEP 561: the package's annotations are for type checkers too
    include_package_data=True,
    python_requires='>=' + cfg['min_python'],
    install_requires=reqs('requirements'),  # torch only: never fastcore or nbdev
    extras_require={'viz': viz, 'course': course, 'dev': sorted(set(course + dev))},
    entry_points={'nbdev': [f'{cfg["lib_path"]}={cfg["lib_path"]}._modidx:d']},
    zip_safe=False,
)
