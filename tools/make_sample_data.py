"""Generate pgrid's sample inputs in ``sample_data/``.

Run from the repository root::

    python tools/make_sample_data.py            # writes sample_data/
    python tools/make_sample_data.py --out DIR  # writes somewhere else

Outputs (all deterministic: fixed seeds, single-threaded, no timestamps):

* ``drugs.sdf``                 126 drug-like molecules, explicit H, ETKDGv3 + MMFF94 3D
* ``small_molecules.xyz``       small molecules (ASE G2 geometries), multi-frame extended XYZ
* ``crystals/*.cif``            NaCl, Si, rutile TiO2, alpha-quartz, primitive fcc Cu (pymatgen)
* ``crystals/multi.cif``        one CIF file with two data blocks (ZnS sphalerite, wurtzite)
* ``crystals/perovskite.extxyz`` periodic extended XYZ (SrTiO3 + a skewed triclinic Si cell)

Needs rdkit, ase, pymatgen and numpy. Everything is read back and checked at the end.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from collections import Counter
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "sample_data"

EMBED_SEED = 0xF00D  # ETKDGv3 random seed (fixed => reproducible conformers)
MMFF_MAX_ITERS = 2000
MIN_DRUGS = 110
DRUG_ELEMENTS = {"H", "C", "N", "O", "F", "P", "S", "Cl", "Br", "I"}
HEAVY_RANGE = (10, 60)

# (name, SMILES).  Approved drugs and common drug-like compounds.  Stereo is given where
# the drug is a single stereoisomer (CIP labels checked against the INN structures);
# racemates are written without stereo, except tramadol, given as its (1R,2R) enantiomer so
# that the relative (trans) configuration of the racemate is fixed.
DRUGS: list[tuple[str, str]] = [
    # analgesics / anti-inflammatories
    ("aspirin", "CC(=O)Oc1ccccc1C(=O)O"),
    ("paracetamol", "CC(=O)Nc1ccc(O)cc1"),
    ("ibuprofen", "CC(C)Cc1ccc(cc1)C(C)C(=O)O"),
    ("naproxen", "COc1ccc2cc(ccc2c1)[C@H](C)C(=O)O"),
    ("diclofenac", "OC(=O)Cc1ccccc1Nc1c(Cl)cccc1Cl"),
    ("indomethacin", "COc1ccc2c(c1)c(CC(=O)O)c(C)n2C(=O)c1ccc(Cl)cc1"),
    ("celecoxib", "Cc1ccc(cc1)-c1cc(nn1-c1ccc(cc1)S(N)(=O)=O)C(F)(F)F"),
    ("morphine", "CN1CC[C@]23[C@@H]4[C@H]1CC5=C2C(=C(C=C5)O)O[C@H]3[C@H](C=C4)O"),
    ("tramadol", "COc1cccc(c1)[C@@]1(O)CCCC[C@@H]1CN(C)C"),
    ("fentanyl", "CCC(=O)N(C1CCN(CCc2ccccc2)CC1)c1ccccc1"),
    ("lidocaine", "CCN(CC)CC(=O)Nc1c(C)cccc1C"),
    ("caffeine", "Cn1cnc2c1c(=O)n(C)c(=O)n2C"),
    # cardiovascular
    (
        "atorvastatin",
        "CC(C)c1c(C(=O)Nc2ccccc2)c(-c2ccccc2)c(-c2ccc(F)cc2)n1CC[C@@H](O)C[C@@H](O)CC(=O)O",
    ),
    (
        "simvastatin",
        "CCC(C)(C)C(=O)O[C@H]1C[C@@H](C)C=C2C=C[C@H](C)[C@H](CC[C@@H]3C[C@@H](O)CC(=O)O3)[C@@H]12",
    ),
    ("rosuvastatin", "CC(C)c1nc(nc(-c2ccc(F)cc2)c1/C=C/[C@@H](O)C[C@@H](O)CC(=O)O)N(C)S(C)(=O)=O"),
    ("ezetimibe", "O[C@@H](CC[C@@H]1[C@H](N(C1=O)c1ccc(F)cc1)c1ccc(O)cc1)c1ccc(F)cc1"),
    ("lisinopril", "NCCCC[C@H](N[C@@H](CCc1ccccc1)C(=O)O)C(=O)N1CCC[C@H]1C(=O)O"),
    ("captopril", "C[C@H](CS)C(=O)N1CCC[C@H]1C(=O)O"),
    ("losartan", "CCCCc1nc(Cl)c(CO)n1Cc1ccc(cc1)-c1ccccc1-c1nn[nH]n1"),
    ("valsartan", "CCCCC(=O)N(Cc1ccc(cc1)-c1ccccc1-c1nn[nH]n1)[C@@H](C(C)C)C(=O)O"),
    ("amlodipine", "CCOC(=O)C1=C(COCCN)NC(C)=C(C1c1ccccc1Cl)C(=O)OC"),
    ("nifedipine", "COC(=O)C1=C(C)NC(C)=C(C1c1ccccc1[N+](=O)[O-])C(=O)OC"),
    ("propranolol", "CC(C)NCC(O)COc1cccc2ccccc12"),
    ("warfarin", "CC(=O)CC(c1ccccc1)c1c(O)c2ccccc2oc1=O"),
    ("clopidogrel", "COC(=O)[C@H](c1ccccc1Cl)N1CCc2sccc2C1"),
    ("rivaroxaban", "Clc1ccc(s1)C(=O)NC[C@H]1CN(C(=O)O1)c1ccc(cc1)N1CCOCC1=O"),
    ("apixaban", "COc1ccc(cc1)-n1nc(C(N)=O)c2CCN(C(=O)c21)c1ccc(cc1)N1CCCCC1=O"),
    ("furosemide", "NS(=O)(=O)c1cc(C(=O)O)c(NCc2ccco2)cc1Cl"),
    ("hydrochlorothiazide", "NS(=O)(=O)c1cc2c(NCNS2(=O)=O)cc1Cl"),
    (
        "spironolactone",
        "CC(=O)S[C@@H]1CC2=CC(=O)CC[C@]2(C)[C@H]2CC[C@@]3(C)[C@@H](CC[C@@]34CCC(=O)O4)[C@H]12",
    ),
    ("amiodarone", "CCCCc1oc2ccccc2c1C(=O)c1cc(I)c(OCCN(CC)CC)c(I)c1"),
    # gastrointestinal
    ("omeprazole", "COc1ccc2[nH]c(nc2c1)S(=O)Cc1ncc(C)c(OC)c1C"),
    ("pantoprazole", "COc1ccnc(CS(=O)c2nc3cc(OC(F)F)ccc3[nH]2)c1OC"),
    ("ranitidine", "CNC(=C[N+](=O)[O-])NCCSCc1ccc(CN(C)C)o1"),
    ("ondansetron", "Cc1nccn1CC1CCc2n(C)c3ccccc3c2C1=O"),
    ("metoclopramide", "CCN(CC)CCNC(=O)c1cc(Cl)c(N)cc1OC"),
    ("domperidone", "O=C1Nc2ccccc2N1C1CCN(CCCN2C(=O)Nc3cc(Cl)ccc23)CC1"),
    # allergy / respiratory
    ("loratadine", "CCOC(=O)N1CCC(=C2c3ccc(Cl)cc3CCc3cccnc23)CC1"),
    ("cetirizine", "OC(=O)COCCN1CCN(CC1)C(c1ccccc1)c1ccc(Cl)cc1"),
    ("brompheniramine", "CN(C)CCC(c1ccc(Br)cc1)c1ccccn1"),
    ("bromhexine", "CN(Cc1cc(Br)cc(Br)c1N)C1CCCCC1"),
    ("ambroxol", "Nc1c(Br)cc(Br)cc1CN[C@H]1CC[C@H](O)CC1"),
    ("salbutamol", "CC(C)(C)NCC(O)c1ccc(O)c(CO)c1"),
    ("montelukast", "CC(C)(O)c1ccccc1CC[C@@H](SCC1(CC(=O)O)CC1)c1cccc(/C=C/c2ccc3ccc(Cl)cc3n2)c1"),
    # CNS
    ("fluoxetine", "CNCCC(Oc1ccc(cc1)C(F)(F)F)c1ccccc1"),
    ("sertraline", "CN[C@H]1CC[C@@H](c2ccc(Cl)c(Cl)c2)c2ccccc12"),
    ("paroxetine", "Fc1ccc(cc1)[C@@H]1CCNC[C@H]1COc1ccc2OCOc2c1"),
    ("citalopram", "CN(C)CCCC1(OCc2cc(ccc12)C#N)c1ccc(F)cc1"),
    ("bupropion", "CC(NC(C)(C)C)C(=O)c1cccc(Cl)c1"),
    ("amitriptyline", "CN(C)CCC=C1c2ccccc2CCc2ccccc12"),
    ("diazepam", "CN1C(=O)CN=C(c2ccccc2)c2cc(Cl)ccc12"),
    ("alprazolam", "Cc1nnc2CN=C(c3ccccc3)c3cc(Cl)ccc3-n12"),
    ("bromazepam", "O=C1CN=C(c2ccccn2)c2cc(Br)ccc2N1"),
    ("zolpidem", "CN(C)C(=O)Cc1c(nc2ccc(C)cn12)-c1ccc(C)cc1"),
    ("haloperidol", "OC1(CCN(CCCC(=O)c2ccc(F)cc2)CC1)c1ccc(Cl)cc1"),
    ("chlorpromazine", "CN(C)CCCN1c2ccccc2Sc2ccc(Cl)cc12"),
    ("clozapine", "CN1CCN(CC1)C1=Nc2cc(Cl)ccc2Nc2ccccc12"),
    ("olanzapine", "Cc1cc2Nc3ccccc3N=C(N3CCN(C)CC3)c2s1"),
    ("risperidone", "Cc1nc2CCCCn2c(=O)c1CCN1CCC(CC1)c1noc2cc(F)ccc12"),
    ("aripiprazole", "Clc1cccc(N2CCN(CCCCOc3ccc4CCC(=O)Nc4c3)CC2)c1Cl"),
    ("carbamazepine", "NC(=O)N1c2ccccc2C=Cc2ccccc12"),
    ("phenytoin", "O=C1NC(=O)C(N1)(c1ccccc1)c1ccccc1"),
    ("lamotrigine", "Nc1nnc(c(N)n1)-c1cccc(Cl)c1Cl"),
    ("gabapentin", "NCC1(CC(=O)O)CCCCC1"),
    ("pregabalin", "CC(C)C[C@H](CN)CC(=O)O"),
    ("valproic acid", "CCCC(CCC)C(=O)O"),
    ("topiramate", "CC1(C)O[C@@H]2CO[C@@]3(COS(N)(=O)=O)OC(C)(C)O[C@H]3[C@@H]2O1"),
    ("modafinil", "NC(=O)CS(=O)C(c1ccccc1)c1ccccc1"),
    ("donepezil", "COc1cc2CC(CC3CCN(Cc4ccccc4)CC3)C(=O)c2cc1OC"),
    ("memantine", "CC12CC3CC(C)(C1)CC(N)(C3)C2"),
    ("levodopa", "N[C@@H](Cc1ccc(O)c(O)c1)C(=O)O"),
    ("serotonin", "NCCc1c[nH]c2ccc(O)cc12"),
    ("melatonin", "COc1ccc2[nH]cc(CCNC(C)=O)c2c1"),
    ("sumatriptan", "CNS(=O)(=O)Cc1ccc2[nH]cc(CCN(C)C)c2c1"),
    ("nicotine", "CN1CCC[C@H]1c1cccnc1"),
    ("cocaine", "COC(=O)[C@H]1[C@@H](OC(=O)c2ccccc2)C[C@@H]2CC[C@H]1N2C"),
    ("atropine", "CN1[C@@H]2CC[C@H]1CC(C2)OC(=O)C(CO)c1ccccc1"),
    # anti-infectives
    ("amoxicillin", "CC1(C)S[C@@H]2[C@H](NC(=O)[C@H](N)c3ccc(O)cc3)C(=O)N2[C@H]1C(=O)O"),
    ("cefalexin", "CC1=C(N2[C@@H]([C@@H](C2=O)NC(=O)[C@@H](c2ccccc2)N)SC1)C(=O)O"),
    ("ciprofloxacin", "OC(=O)c1cn(C2CC2)c2cc(N3CCNCC3)c(F)cc2c1=O"),
    ("levofloxacin", "C[C@H]1COc2c(N3CCN(C)CC3)c(F)cc3c(=O)c(cn1c23)C(=O)O"),
    ("sulfamethoxazole", "Cc1cc(NS(=O)(=O)c2ccc(N)cc2)no1"),
    ("trimethoprim", "COc1cc(Cc2cnc(N)nc2N)cc(OC)c1OC"),
    ("metronidazole", "Cc1ncc(n1CCO)[N+](=O)[O-]"),
    ("isoniazid", "NNC(=O)c1ccncc1"),
    ("chloramphenicol", "OC[C@@H](NC(=O)C(Cl)Cl)[C@H](O)c1ccc(cc1)[N+](=O)[O-]"),
    ("linezolid", "CC(=O)NC[C@H]1CN(C(=O)O1)c1ccc(N2CCOCC2)c(F)c1"),
    ("fluconazole", "OC(Cn1cncn1)(Cn1cncn1)c1ccc(F)cc1F"),
    ("clotrimazole", "Clc1ccccc1C(c1ccccc1)(c1ccccc1)n1ccnc1"),
    ("acyclovir", "Nc1nc2n(COCCO)cnc2c(=O)[nH]1"),
    ("zidovudine", "Cc1cn([C@H]2C[C@H](N=[N+]=[N-])[C@@H](CO)O2)c(=O)[nH]c1=O"),
    ("idoxuridine", "OC[C@H]1O[C@H](C[C@@H]1O)n1cc(I)c(=O)[nH]c1=O"),
    ("oseltamivir", "CCOC(=O)C1=C[C@@H](OC(CC)CC)[C@H](NC(C)=O)[C@@H](N)C1"),
    ("tenofovir", "C[C@H](Cn1cnc2c(N)ncnc21)OCP(=O)(O)O"),
    (
        "sofosbuvir",
        (
            "CC(C)OC(=O)[C@H](C)N[P@](=O)(OC[C@H]1O[C@@H](n2ccc(=O)[nH]c2=O)[C@](C)(F)[C@@H]1O)"
            "Oc1ccccc1"
        ),
    ),
    ("chloroquine", "CCN(CC)CCCC(C)Nc1ccnc2cc(Cl)ccc12"),
    ("quinine", "COc1ccc2nccc([C@@H](O)[C@@H]3C[C@@H]4CCN3C[C@@H]4C=C)c2c1"),
    ("mefloquine", "OC(c1cc(nc2c1cccc2C(F)(F)F)C(F)(F)F)C1CCCCN1"),
    ("albendazole", "CCCSc1ccc2nc(NC(=O)OC)[nH]c2c1"),
    # oncology / immunology
    ("imatinib", "Cc1ccc(NC(=O)c2ccc(CN3CCN(C)CC3)cc2)cc1Nc1nccc(n1)-c1cccnc1"),
    ("gefitinib", "COc1cc2ncnc(Nc3ccc(F)c(Cl)c3)c2cc1OCCCN1CCOCC1"),
    ("tamoxifen", "CC/C(=C(\\c1ccccc1)c1ccc(OCCN(C)C)cc1)c1ccccc1"),
    ("methotrexate", "CN(Cc1cnc2nc(N)nc(N)c2n1)c1ccc(cc1)C(=O)N[C@@H](CCC(=O)O)C(=O)O"),
    ("capecitabine", "CCCCCOC(=O)Nc1nc(=O)n(cc1F)[C@@H]1O[C@H](C)[C@@H](O)[C@H]1O"),
    ("letrozole", "N#Cc1ccc(cc1)C(n1cncn1)c1ccc(cc1)C#N"),
    ("bicalutamide", "CC(O)(CS(=O)(=O)c1ccc(F)cc1)C(=O)Nc1ccc(C#N)c(c1)C(F)(F)F"),
    ("cyclophosphamide", "ClCCN(CCCl)P1(=O)NCCCO1"),
    ("ifosfamide", "ClCCNP1(=O)OCCCN1CCCl"),
    ("colchicine", "COc1cc2CC[C@H](NC(C)=O)C3=CC(=O)C(OC)=CC=C3c2c(OC)c1OC"),
    ("allopurinol", "O=c1[nH]cnc2[nH]ncc12"),
    # steroids / hormones / metabolic
    ("prednisolone", "C[C@]12C[C@H](O)[C@H]3[C@@H](CCC4=CC(=O)C=C[C@]34C)[C@@H]1CC[C@]2(O)C(=O)CO"),
    (
        "dexamethasone",
        "C[C@@H]1C[C@H]2[C@@H]3CCC4=CC(=O)C=C[C@]4(C)[C@@]3(F)[C@@H](O)C[C@]2(C)[C@@]1(O)C(=O)CO",
    ),
    ("testosterone", "C[C@]12CC[C@H]3[C@@H](CCC4=CC(=O)CC[C@]34C)[C@@H]1CC[C@@H]2O"),
    ("estradiol", "C[C@]12CC[C@H]3[C@@H](CCc4cc(O)ccc34)[C@@H]1CC[C@@H]2O"),
    ("finasteride", "CC(C)(C)NC(=O)[C@H]1CC[C@H]2[C@@H]3CC[C@H]4NC(=O)C=C[C@]4(C)[C@H]3CC[C@]12C"),
    ("levothyroxine", "N[C@@H](Cc1cc(I)c(Oc2cc(I)c(O)c(I)c2)c(I)c1)C(=O)O"),
    ("liothyronine", "N[C@@H](Cc1cc(I)c(Oc2ccc(O)c(I)c2)c(I)c1)C(=O)O"),
    ("glibenclamide", "COc1ccc(Cl)cc1C(=O)NCCc1ccc(cc1)S(=O)(=O)NC(=O)NC1CCCCC1"),
    ("pioglitazone", "CCc1ccc(CCOc2ccc(CC3SC(=O)NC3=O)cc2)nc1"),
    ("sitagliptin", "N[C@@H](CC(=O)N1CCn2c(C1)nnc2C(F)(F)F)Cc1cc(F)c(F)cc1F"),
    ("dapagliflozin", "CCOc1ccc(Cc2cc(ccc2Cl)[C@@H]2O[C@H](CO)[C@@H](O)[C@H](O)[C@H]2O)cc1"),
    ("alendronic acid", "NCCCC(O)(P(=O)(O)O)P(=O)(O)O"),
    ("fospropofol", "CC(C)c1cccc(C(C)C)c1OCOP(=O)(O)O"),
    ("brimonidine", "Brc1c(NC2=NCCN2)ccc2nccnc12"),
    ("sildenafil", "CCCc1nn(C)c2c1nc([nH]c2=O)-c1cc(ccc1OCC)S(=O)(=O)N1CCN(C)CC1"),
    ("tadalafil", "CN1CC(=O)N2[C@H](Cc3c([nH]c4ccccc34)[C@H]2c2ccc3OCOc3c2)C1=O"),
]

# Small molecules from ASE's G2 collection (experimental / MP2 reference geometries).
SMALL_MOLECULES: list[tuple[str, str]] = [
    ("water", "H2O"),
    ("methane", "CH4"),
    ("ammonia", "NH3"),
    ("hydrogen sulfide", "SH2"),
    ("phosphine", "PH3"),
    ("hydrogen cyanide", "HCN"),
    ("acetylene", "C2H2"),
    ("ethylene", "C2H4"),
    ("formaldehyde", "H2CO"),
    ("methanol", "CH3OH"),
    ("ethanol", "CH3CH2OH"),
    ("acetic acid", "CH3COOH"),
    ("acetone", "CH3COCH3"),
    ("acetamide", "CH3CONH2"),
    ("chloromethane", "CH3Cl"),
    ("benzene", "C6H6"),
    ("pyridine", "C5H5N"),
    ("furan", "C4H4O"),
    ("thiophene", "C4H4S"),
]


# --------------------------------------------------------------------------------------
# molecules
# --------------------------------------------------------------------------------------
def make_drugs(path: Path) -> tuple[int, list[str]]:
    from rdkit import Chem, RDLogger
    from rdkit.Chem import AllChem

    RDLogger.DisableLog("rdApp.warning")
    names = [n for n, _ in DRUGS]
    dupes = [n for n, c in Counter(names).items() if c > 1]
    if dupes:
        raise SystemExit(f"duplicate drug names: {dupes}")

    failed: list[str] = []
    n_written = 0
    writer = Chem.SDWriter(str(path))
    writer.SetKekulize(True)
    for name, smi in DRUGS:
        mol = Chem.MolFromSmiles(smi)
        if mol is None:
            print(f"  SKIP {name}: SMILES does not parse")
            failed.append(name)
            continue
        heavy = mol.GetNumHeavyAtoms()
        if not HEAVY_RANGE[0] <= heavy <= HEAVY_RANGE[1]:
            print(f"  note {name}: {heavy} heavy atoms (outside {HEAVY_RANGE})")
        mol = Chem.AddHs(mol)
        params = AllChem.ETKDGv3()
        params.randomSeed = EMBED_SEED
        params.numThreads = 1
        cid = AllChem.EmbedMolecule(mol, params)
        if cid < 0:  # retry once from random coordinates (still seeded)
            params.useRandomCoords = True
            cid = AllChem.EmbedMolecule(mol, params)
            if cid >= 0:
                print(f"  note {name}: embedded only with useRandomCoords")
        if cid < 0:
            print(f"  SKIP {name}: ETKDGv3 embedding failed")
            failed.append(name)
            continue
        if not AllChem.MMFFHasAllMoleculeParams(mol):
            print(f"  SKIP {name}: no MMFF94 parameters")
            failed.append(name)
            continue
        res = AllChem.MMFFOptimizeMolecule(mol, maxIters=MMFF_MAX_ITERS)
        if res != 0:
            print(f"  note {name}: MMFF did not fully converge in {MMFF_MAX_ITERS} steps")
        mol.SetProp("_Name", name)
        mol.SetProp("smiles", smi)
        writer.write(mol)
        n_written += 1
    writer.close()
    return n_written, failed


def make_small_molecules(path: Path) -> int:
    from ase.build import molecule
    from ase.io import write

    frames = []
    for name, g2name in SMALL_MOLECULES:
        atoms = molecule(g2name)
        atoms.info = {"name": name}
        atoms.pbc = False
        atoms.cell = None
        frames.append(atoms)
    write(path, frames, format="extxyz")
    return len(frames)


# --------------------------------------------------------------------------------------
# crystals
# --------------------------------------------------------------------------------------
def build_crystals():
    """Return {file stem: pymatgen Structure} for the single-structure CIF files."""
    from pymatgen.core import Lattice, Structure

    out = {}
    # rock salt NaCl, Fm-3m, a = 5.640 A; Na 4a (0,0,0), Cl 4b (1/2,1/2,1/2)
    out["NaCl"] = Structure.from_spacegroup(
        "Fm-3m", Lattice.cubic(5.640), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]]
    )
    # diamond Si, Fd-3m (origin choice 1), a = 5.431 A; Si 8a (0,0,0)
    out["Si"] = Structure.from_spacegroup("Fd-3m", Lattice.cubic(5.431), ["Si"], [[0, 0, 0]])
    # rutile TiO2, P4_2/mnm, a = 4.594, c = 2.959 A; Ti 2a (0,0,0), O 4f (x,x,0), x = 0.3049
    out["TiO2_rutile"] = Structure.from_spacegroup(
        "P4_2/mnm", Lattice.tetragonal(4.594, 2.959), ["Ti", "O"], [[0, 0, 0], [0.3049, 0.3049, 0]]
    )
    # alpha-quartz SiO2, P3_221, a = 4.9134, c = 5.4052 A (Levien, Prewitt & Weidner 1980,
    # Am. Mineral. 65, 920): Si (0.4697, 0, 0), O (0.4135, 0.2669, 0.1191).  Those refer to
    # an origin shifted along c; in the International Tables setting that pymatgen uses
    # the same structure is Si 3a (x, 0, 2/3) and O 6c (x, y, z + 2/3).  Checked below:
    # 3 Si + 6 O, every Si bonded to 4 O at 1.604 / 1.613 A.
    out["SiO2_alpha_quartz"] = Structure.from_spacegroup(
        "P3_221",
        Lattice.hexagonal(4.9134, 5.4052),
        ["Si", "O"],
        [[0.4697, 0, 2 / 3], [0.4135, 0.2669, 0.1191 + 2 / 3]],
    )
    # fcc Cu, Fm-3m, a = 3.615 A -> primitive rhombohedral cell (a = a0/sqrt2, 60 deg)
    cu = Structure.from_spacegroup("Fm-3m", Lattice.cubic(3.615), ["Cu"], [[0, 0, 0]])
    out["Cu_fcc_primitive"] = cu.get_primitive_structure()
    return out


def build_multi():
    """Structures for the multi-block CIF: two ZnS polymorphs.

    Same composition on purpose: pymatgen's CifParser compares every block against the
    formula of the *first* block and warns ("Missing elements ...") for blocks with other
    elements, which would make the demo noisy."""
    from pymatgen.core import Lattice, Structure

    return {
        # sphalerite (zinc blende), F-43m, a = 5.409 A; Zn 4a (0,0,0), S 4c (1/4,1/4,1/4)
        "ZnS_sphalerite": Structure.from_spacegroup(
            "F-43m", Lattice.cubic(5.409), ["Zn", "S"], [[0, 0, 0], [0.25, 0.25, 0.25]]
        ),
        # wurtzite, P6_3mc, a = 3.8227, c = 6.2607 A; Zn 2b (1/3,2/3,0), S 2b (1/3,2/3,u),
        # u = 0.3748
        "ZnS_wurtzite": Structure.from_spacegroup(
            "P6_3mc",
            Lattice.hexagonal(3.8227, 6.2607),
            ["Zn", "S"],
            [[1 / 3, 2 / 3, 0], [1 / 3, 2 / 3, 0.3748]],
        ),
    }


# expected atoms per written cell and nearest-neighbour distance (A) for sanity checks
CRYSTAL_EXPECT = {
    "NaCl": (8, 2.820),
    "Si": (8, 2.352),
    "TiO2_rutile": (6, 1.948),
    "SiO2_alpha_quartz": (9, 1.604),
    "Cu_fcc_primitive": (1, 2.556),
    "ZnS_sphalerite": (8, 2.342),
    "ZnS_wurtzite": (4, 2.342),
}


def make_crystals(cdir: Path) -> dict[str, int]:
    from pymatgen.io.cif import CifWriter

    written = {}
    for stem, s in build_crystals().items():
        CifWriter(s).write_file(str(cdir / f"{stem}.cif"))
        written[f"{stem}.cif"] = 1
    blocks = []
    for label, s in build_multi().items():
        text = str(CifWriter(s))
        # CifWriter names the block data_<formula>; make the names unique
        head = f"data_{s.composition.reduced_formula}\n"
        assert head in text
        blocks.append(text.replace(head, f"data_{label}\n", 1))
    (cdir / "multi.cif").write_text("\n".join(b.rstrip("\n") + "\n" for b in blocks))
    written["multi.cif"] = len(blocks)
    return written


def make_periodic_extxyz(path: Path) -> int:
    from ase import Atoms
    from ase.io import write

    # cubic perovskite SrTiO3, Pm-3m, a = 3.905 A: Sr 1a, Ti 1b, O 3c
    a = 3.905
    sto = Atoms(
        "SrTiO3",
        scaled_positions=[[0, 0, 0], [0.5, 0.5, 0.5], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]],
        cell=np.eye(3) * a,
        pbc=True,
    )
    sto.info = {"name": "SrTiO3 cubic perovskite"}

    # diamond Si (a = 5.431 A) in a deliberately skewed, fully triclinic primitive cell:
    # fcc primitive vectors combined with a unimodular matrix (same crystal, 2 atoms/cell;
    # a, b, c = 3.840, 5.431, 6.652 A; alpha, beta, gamma = 65.9, 106.8, 45.0 deg).
    a0 = 5.431
    prim = 0.5 * a0 * np.array([[0, 1, 1], [1, 0, 1], [1, 1, 0]], dtype=float)
    skew = np.array([[1, 0, -1], [1, 1, -1], [0, 1, 1]])  # det = +1
    cell = skew @ prim
    cart = np.array([[0, 0, 0], [0.25 * a0] * 3])
    si = Atoms("Si2", positions=cart, cell=cell, pbc=True)
    si.wrap()
    si.info = {"name": "Si diamond, skewed triclinic primitive cell"}

    write(path, [sto, si], format="extxyz")
    return 2


# --------------------------------------------------------------------------------------
# verification
# --------------------------------------------------------------------------------------
def _same_as_smiles(mol3d, smiles: str) -> bool:
    """True if the 3D record is the molecule in ``smiles``, including every stereo element
    that the SMILES specifies (centres left open in the SMILES, e.g. racemates, are ignored).
    Relies on atom/bond order being preserved: SMILES order, then AddHs appends H."""
    from rdkit import Chem

    ref = Chem.MolFromSmiles(smiles)
    m3 = Chem.Mol(mol3d)
    Chem.AssignStereochemistryFrom3D(m3)
    for a_ref in ref.GetAtoms():
        if a_ref.GetChiralTag() == Chem.ChiralType.CHI_UNSPECIFIED:
            m3.GetAtomWithIdx(a_ref.GetIdx()).SetChiralTag(Chem.ChiralType.CHI_UNSPECIFIED)
    for b_ref in ref.GetBonds():
        if (
            b_ref.GetBondType() == Chem.BondType.DOUBLE
            and b_ref.GetStereo() == Chem.BondStereo.STEREONONE
        ):
            b3 = m3.GetBondBetweenAtoms(b_ref.GetBeginAtomIdx(), b_ref.GetEndAtomIdx())
            b3.SetStereo(Chem.BondStereo.STEREONONE)
    m3 = Chem.RemoveHs(m3)
    Chem.AssignStereochemistry(m3, cleanIt=True, force=True)
    return Chem.MolToSmiles(m3) == Chem.MolToSmiles(ref)


def verify(out: Path) -> list[str]:
    from ase.io import iread
    from pymatgen.io.cif import CifParser
    from rdkit import Chem

    lines = []
    problems = []

    # drugs.sdf
    sdf = out / "drugs.sdf"
    supp = Chem.SDMolSupplier(str(sdf), removeHs=False)
    elems: Counter[str] = Counter()
    n = 0
    heavy = []
    stereo_mismatch = []
    for i, mol in enumerate(supp):
        if mol is None:
            problems.append(f"drugs.sdf record {i} unreadable")
            continue
        n += 1
        name = mol.GetProp("_Name")
        if not mol.HasProp("smiles"):
            problems.append(f"{name}: no smiles property")
        if mol.GetNumConformers() != 1 or not mol.GetConformer().Is3D():
            problems.append(f"{name}: no 3D conformer")
        syms = {a.GetSymbol() for a in mol.GetAtoms()}
        if "H" not in syms:
            problems.append(f"{name}: no hydrogens")
        if syms - DRUG_ELEMENTS:
            problems.append(f"{name}: unexpected elements {syms - DRUG_ELEMENTS}")
        for s in syms:
            elems[s] += 1
        heavy.append(mol.GetNumHeavyAtoms())
        if not _same_as_smiles(mol, mol.GetProp("smiles")):
            stereo_mismatch.append(name)
    if n < MIN_DRUGS:
        problems.append(f"drugs.sdf has only {n} molecules (< {MIN_DRUGS})")
    missing = DRUG_ELEMENTS - set(elems)
    if missing:
        problems.append(f"drugs.sdf lacks elements {sorted(missing)}")
    if stereo_mismatch:
        problems.append(f"3D structure != SMILES for: {stereo_mismatch}")
    cov = ", ".join(f"{e}:{elems[e]}" for e in sorted(elems, key=lambda e: -elems[e]))
    lines.append(
        f"drugs.sdf: {n} molecules, heavy atoms {min(heavy)}-{max(heavy)} "
        f"(median {int(np.median(heavy))}); molecules containing each element: {cov}"
    )

    # small molecules
    xyz = out / "small_molecules.xyz"
    frames = list(iread(str(xyz), index=":", format="extxyz"))
    for at in frames:
        if "name" not in at.info or at.pbc.any() or at.cell.rank != 0:
            problems.append(f"small_molecules.xyz frame {at.info.get('name')}: bad info/pbc/cell")
        if "H" not in at.get_chemical_symbols():
            problems.append(f"small_molecules.xyz frame {at.info.get('name')}: no H")
    lines.append(
        f"small_molecules.xyz: {len(frames)} frames, "
        f"{sum(len(a) for a in frames)} atoms, elements "
        f"{sorted({s for a in frames for s in a.get_chemical_symbols()})}"
    )

    # periodic extxyz
    pxyz = out / "crystals" / "perovskite.extxyz"
    for at in iread(str(pxyz), index=":", format="extxyz"):
        if not at.pbc.all() or at.cell.rank != 3:
            problems.append(f"perovskite.extxyz {at.info.get('name')}: not periodic")
        par = at.cell.cellpar()
        lines.append(
            f"perovskite.extxyz: {at.info['name']}: {at.get_chemical_formula()}, "
            f"cellpar {np.round(par, 3).tolist()}"
        )

    # CIF files: every block must parse, be ordered and match the structure it came from
    built = {f"{stem}.cif": {stem: st} for stem, st in build_crystals().items()}
    built["multi.cif"] = build_multi()
    for cif in sorted((out / "crystals").glob("*.cif")):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            parser = CifParser(str(cif))
            structs = parser.parse_structures(primitive=False)
        for w in caught:  # e.g. "2 fractional coordinates rounded to ideal values" (quartz)
            lines.append(f"{cif.name}: pymatgen warning: {w.message}")
        expected = built.get(cif.name, {})
        if len(structs) != len(expected):
            problems.append(f"{cif.name}: parsed {len(structs)} blocks, expected {len(expected)}")
        for (key, ref), st in zip(expected.items(), structs, strict=False):
            if not st.is_ordered:
                problems.append(f"{cif.name}/{key}: partial occupancy")
            nat, dnn = CRYSTAL_EXPECT[key]
            dmin = min(nb.nn_distance for nb in st.get_neighbors(st[0], 4.0))
            if len(st) != nat or abs(dmin - dnn) > 0.01 or not st.matches(ref):
                problems.append(
                    f"{cif.name}/{key}: {len(st)} atoms, d_nn {dmin:.3f} "
                    f"(expected {nat}, {dnn}), matches source: {st.matches(ref)}"
                )
            lat = st.lattice
            lines.append(
                f"{cif.name}: {key}: {st.composition.formula} ({len(st)} atoms) "
                f"a,b,c={lat.a:.4f},{lat.b:.4f},{lat.c:.4f} "
                f"angles={lat.alpha:.2f},{lat.beta:.2f},{lat.gamma:.2f} "
                f"d_nn={dmin:.3f}"
            )
    return lines + [f"PROBLEM: {p}" for p in problems]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output directory")
    args = ap.parse_args(argv)
    out: Path = args.out
    cdir = out / "crystals"
    cdir.mkdir(parents=True, exist_ok=True)

    print(f"writing sample data into {out}")
    print(f"drugs.sdf: embedding {len(DRUGS)} molecules (ETKDGv3 seed {EMBED_SEED}, MMFF94)")
    n_drugs, failed = make_drugs(out / "drugs.sdf")
    n_small = make_small_molecules(out / "small_molecules.xyz")
    make_crystals(cdir)
    make_periodic_extxyz(cdir / "perovskite.extxyz")
    print(
        f"wrote {n_drugs} drugs ({len(failed)} skipped: {failed or 'none'}), "
        f"{n_small} small molecules"
    )

    print("\nverification (reading everything back):")
    report = verify(out)
    for line in report:
        print("  " + line)
    print("\nfiles:")
    total = 0
    for f in sorted(p for p in out.rglob("*") if p.is_file()):
        total += f.stat().st_size
        print(f"  {f.relative_to(out)}  {f.stat().st_size / 1024:.1f} KiB")
    print(f"  total {total / 1024:.1f} KiB")
    bad = [r for r in report if r.startswith("PROBLEM")]
    if bad:
        print(f"\n{len(bad)} problem(s) found", file=sys.stderr)
        return 1
    print("\nall checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
