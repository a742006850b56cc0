# SPDX-License-Identifier: MIT
"""hdqt-eval, the offline class-incremental benchmark, on the bundled HAPT
subset: the JSON report the issue specifies, the table, the plot, the
feature dump, and bad arguments.  A few epochs only: the full protocol is a
benchmark (README), not a test."""
import csv
import json
import os
import subprocess
import sys
import tempfile
import unittest
import xml.etree.ElementTree as ET

EVAL = os.environ['HDQT_EVAL']
SUBSET = os.path.join(os.environ['HDQT_SOURCE_ROOT'], 'data', 'hapt-subset')


def run(*args, timeout=300):
    return subprocess.run([EVAL, *args], capture_output=True, text=True, timeout=timeout)


class TestEval(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()
        cls.svg = os.path.join(cls.tmp.name, 'acc.svg')
        p = run('--data', SUBSET, '--quant', 'fp32,hdqt', '--method', 'icarl,finetune',
                '--epochs', '3', '--seeds', '2', '--jobs', '2', '--json', '--plot', cls.svg)
        if p.returncode != 0:
            raise AssertionError(p.stderr)
        cls.report = json.loads(p.stdout)

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()

    def runs(self):
        return {(r['quant'], r['method']): r for r in self.report['runs']}

    def test_report_keys_and_ranges(self):
        runs = self.runs()
        self.assertEqual(set(runs), {('fp32', 'icarl'), ('fp32', 'finetune'),
                                     ('hdqt', 'icarl'), ('hdqt', 'finetune')})
        for (quant, method), r in runs.items():
            for key in ('avg_incremental_accuracy', 'last_accuracy', 'forgetting'):
                self.assertEqual(set(r[key]), {'mean', 'std'}, key)
                self.assertTrue(0 <= r[key]['mean'] <= 100, (key, r[key]))
            for key in ('train_samples_per_s', 'wall_s', 'peak_rss_kb'):
                self.assertGreater(r[key], 0, key)
            self.assertEqual(r['seeds'], 2)
            # 11 classes (SIT_TO_STAND left out): 2 first, then 2 per task
            seen = [t['seen_classes'] for t in r['tasks']]
            self.assertEqual([len(s) for s in seen], [2, 4, 6, 8, 10, 11])
            self.assertNotIn(8, seen[-1])
            self.assertEqual(seen[-1], sorted(seen[-1]))
            # the average incremental accuracy is the mean of the per-task ones
            accs = [t['accuracy']['mean'] for t in r['tasks']]
            self.assertAlmostEqual(r['avg_incremental_accuracy']['mean'], sum(accs) / len(accs),
                                   delta=0.01)
            self.assertAlmostEqual(r['last_accuracy']['mean'], accs[-1], delta=0.001)
            # NME exists for iCaRL only
            nme = r['tasks'][-1]['accuracy_nme']
            self.assertEqual(nme is not None and nme['mean'] is not None, method == 'icarl',
                             (quant, method, nme))

    def test_gap_to_fp32(self):
        runs = self.runs()
        for method in ('icarl', 'finetune'):
            self.assertNotIn('gap_to_fp32_pp', runs[('fp32', method)])
            gap = runs[('hdqt', method)]['gap_to_fp32_pp']
            want = (runs[('hdqt', method)]['avg_incremental_accuracy']['mean'] -
                    runs[('fp32', method)]['avg_incremental_accuracy']['mean'])
            self.assertAlmostEqual(gap['avg_incremental_accuracy'], want, delta=0.002)
        self.assertIsNone(runs[('hdqt', 'finetune')]['gap_to_fp32_pp']['avg_incremental_accuracy_nme'])

    def test_replay_beats_finetuning(self):
        runs = self.runs()
        for quant in ('fp32', 'hdqt'):
            self.assertGreater(runs[(quant, 'icarl')]['last_accuracy']['mean'],
                               runs[(quant, 'finetune')]['last_accuracy']['mean'] + 10, quant)

    def test_plot(self):
        root = ET.parse(self.svg).getroot()
        self.assertTrue(root.tag.endswith('svg'))
        lines = [e for e in root.iter() if e.tag.endswith('polyline')]
        self.assertEqual(len(lines), 4)  # one per (recipe, method)
        for e in lines:
            self.assertEqual(len(e.get('points').split()), 6)  # one point per task

    def test_table(self):
        p = run('--data', SUBSET, '--quant', 'fp32,hdqt', '--method', 'er', '--epochs', '1',
                '--seeds', '1')
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn('avg-inc', p.stdout)
        self.assertRegex(p.stdout, r'gap to fp32 in avg-inc, pp \(logits / NME\): hdqt er [+-]\d')
        self.assertRegex(p.stdout, r'(?m)^hdqt +er ')

    def test_dump_features(self):
        out = os.path.join(self.tmp.name, 'f.csv')
        p = run('--data', SUBSET, '--dump-features', out)
        self.assertEqual(p.returncode, 0, p.stderr)
        with open(out) as f:
            rows = list(csv.reader(f))
        self.assertEqual(rows[0][:3], ['label', 'user', 'ax_mean'])
        self.assertEqual(len(rows[0]), 2 + 166)
        self.assertGreater(len(rows), 500)
        self.assertTrue(all(len(r) == len(rows[0]) for r in rows))
        # the dump is valid input, and gives the directory's numbers
        p = run('--data', out, '--drop-classes', '8', '--quant', 'hdqt', '--method', 'icarl',
                '--epochs', '1', '--seeds', '1', '--json')
        q = run('--data', SUBSET, '--quant', 'hdqt', '--method', 'icarl', '--epochs', '1',
                '--seeds', '1', '--json')
        self.assertEqual(p.returncode, 0, p.stderr)
        a, b = json.loads(p.stdout), json.loads(q.stdout)
        self.assertAlmostEqual(a['avg_incremental_accuracy']['mean'],
                               b['avg_incremental_accuracy']['mean'], delta=0.5)

    def test_bad_arguments(self):
        for args, msg in ((['--quant', 'bogus'], "invalid value 'bogus' for --quant"),
                          (['--method', 'sgd'], "invalid value 'sgd' for --method"),
                          (['--epochs', '0'], "invalid value '0' for --epochs"),
                          (['--epochs', '12x'], "invalid value '12x' for --epochs"),
                          (['--bits', '1'], "invalid value '1' for --bits"),
                          (['--bwd-fwdq', '2'], "invalid value '2' for --bwd-fwdq")):
            p = run('--data', SUBSET, *args)
            self.assertNotEqual(p.returncode, 0, args)
            self.assertIn(msg, p.stderr, args)
            self.assertEqual(p.stdout, '', args)
        p = run('--data', '/nonexistent/hapt')
        self.assertNotEqual(p.returncode, 0)
        self.assertIn('/nonexistent/hapt: No such file or directory', p.stderr)
        self.assertEqual(p.stdout, '')


if __name__ == '__main__':
    unittest.main(argv=[sys.argv[0]] + sys.argv[1:], verbosity=2)
