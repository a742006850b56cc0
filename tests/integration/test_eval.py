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
# The subset's classes once SIT_TO_STAND (8) is left out, in label order.
LABELS = [1, 2, 3, 4, 5, 6, 7, 9, 10, 11, 12]


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

    def test_f1_and_forgetting_per_class(self):
        for (quant, method), r in self.runs().items():
            for t in r['tasks']:
                for key in ('f1_macro', 'f1_micro'):
                    self.assertEqual(set(t[key]), {'mean', 'std'}, key)
                    self.assertTrue(0 <= t[key]['mean'] <= 100, (quant, method, key, t[key]))
                # every prediction is a seen class, so micro-F1 is the accuracy
                self.assertAlmostEqual(t['f1_micro']['mean'], t['accuracy']['mean'], delta=0.002)
            self.assertEqual(r['class_orders'], [LABELS])
            self.assertEqual(r['orders'], 1)
            fpc = r['forgetting_per_class']
            self.assertEqual(set(fpc), {str(c) for c in LABELS})
            self.assertIsNone(fpc['12'])  # the last task's class: nothing to forget yet
            for label in LABELS[:-1]:
                self.assertEqual(set(fpc[str(label)]), {'mean', 'std'}, label)
                self.assertTrue(-100 <= fpc[str(label)]['mean'] <= 100, (label, fpc[str(label)]))

    def test_bic(self):
        p = run('--data', SUBSET, '--quant', 'hdqt', '--method', 'bic,icarl', '--epochs', '5',
                '--seeds', '1', '--jobs', '2', '--json')
        self.assertEqual(p.returncode, 0, p.stderr)
        runs = {r['method']: r for r in json.loads(p.stdout)['runs']}
        self.assertEqual(set(runs), {'bic', 'icarl'})
        bic = runs['bic']
        self.assertEqual([len(t['seen_classes']) for t in bic['tasks']], [2, 4, 6, 8, 10, 11])
        for t in bic['tasks']:
            self.assertTrue(0 <= t['accuracy']['mean'] <= 100, t)
            self.assertTrue(0 <= t['f1_macro']['mean'] <= 100, t)
            self.assertIsNone(t['accuracy_nme'])  # BiC classifies with its corrected logits
        # chance on 11 classes is 9%; the first task is iCaRL's (nothing to correct yet)
        self.assertGreater(bic['last_accuracy']['mean'], 30)
        self.assertAlmostEqual(bic['tasks'][0]['accuracy']['mean'],
                               runs['icarl']['tasks'][0]['accuracy']['mean'], delta=0.001)
        p = run('--data', SUBSET, '--quant', 'hdqt', '--method', 'bic', '--epochs', '2',
                '--seeds', '1')
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertRegex(p.stdout, r'(?m)^hdqt +bic ')
        self.assertRegex(p.stdout, r'(?m)^  macro-F1 +bic ')
        self.assertIn('forgetting per class, pp (hdqt bic):', p.stdout)

    def test_class_order_list(self):
        order = [12, 11, 10, 9, 7, 6, 5, 4, 3, 2, 1]
        p = run('--data', SUBSET, '--quant', 'hdqt', '--method', 'er', '--epochs', '2',
                '--seeds', '1', '--class-order', ','.join(map(str, order)), '--json')
        self.assertEqual(p.returncode, 0, p.stderr)
        r = json.loads(p.stdout)
        seen = [t['seen_classes'] for t in r['tasks']]
        self.assertEqual(seen[0], [12, 11])
        self.assertEqual(seen[1], [12, 11, 10, 9])
        self.assertEqual(seen[-1], order)
        self.assertEqual(r['class_orders'], [order])
        self.assertIsNone(r['forgetting_per_class']['1'])  # now the last task's class
        self.assertIsNotNone(r['forgetting_per_class']['12'])

    def test_random_orders(self):
        args = ('--data', SUBSET, '--quant', 'hdqt', '--method', 'er', '--epochs', '1',
                '--seeds', '1', '--orders', '2', '--class-order', 'random', '--json')
        p = run(*args)
        self.assertEqual(p.returncode, 0, p.stderr)
        r = json.loads(p.stdout)
        self.assertEqual(r['orders'], 2)
        orders = r['class_orders']
        self.assertEqual(len(orders), 2)
        self.assertNotEqual(orders[0], orders[1])
        for o in orders:
            self.assertEqual(sorted(o), LABELS)
        self.assertEqual(r['tasks'][0]['seen_classes'], orders[0][:2])
        # seeded: the same orders on every invocation
        q = run(*args)
        self.assertEqual(q.returncode, 0, q.stderr)
        self.assertEqual(json.loads(q.stdout)['class_orders'], orders)

    def test_bad_class_order(self):
        good = ','.join(map(str, LABELS))
        for value, msg in (('1,2,3,4,5,6,7,9,10,11,12,1', 'label 1 appears twice'),
                           (good + ',13', 'label 13 is not a class of'),
                           (good.replace('12', '8'), 'label 8 is not a class of'),
                           ('1,2,3,4,5,6,7,9,10,11', 'class 12 is missing'),
                           ('1,x', "invalid value '1,x' for --class-order")):
            p = run('--data', SUBSET, '--epochs', '1', '--seeds', '1', '--class-order', value)
            self.assertEqual(p.returncode, 2, (value, p.stderr))
            self.assertIn(msg, p.stderr, value)
            self.assertEqual(p.stdout, '', value)
        p = run('--data', SUBSET, '--class-order', good, '--orders', '2')
        self.assertEqual(p.returncode, 2)
        self.assertIn('--orders 2 needs --class-order random', p.stderr)
        p = run('--data', SUBSET, '--quant', 'fp32,hdqt', '--seeds', '16', '--orders', '64')
        self.assertEqual(p.returncode, 2)
        self.assertIn('exceed the limit of', p.stderr)

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
