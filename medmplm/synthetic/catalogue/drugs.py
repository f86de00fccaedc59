"""Curated drug formulary: what PRESCRIPTIONS rows and note medication lists are drawn from.

Each drug carries the MIMIC-III PRESCRIPTIONS fields (DRUG, DRUG_NAME_GENERIC, FORMULARY_DRUG_CD,
PROD_STRENGTH, DOSE_UNIT_RX, FORM_UNIT_DISP, ROUTE), its ATC level-4 class, and the names notes use
for it. NDCs, GSNs and RXCUIs are derived from the key by ``medmplm.synthetic.formulary``, so they
are stable across runs but are not the real product codes.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Drug:
    """One formulary product.

    ``unit_dose`` is the amount of drug (in ``dose_unit``) in one dispensed ``form_unit``; it turns
    DOSE_VAL_RX into FORM_VAL_DISP. Zero means the dispensed amount does not scale with the dose
    (drips, sliding scales).
    """

    key: str
    name: str
    generic: str
    formulary_cd: str
    strength: str
    unit_dose: float
    doses: tuple[str, ...]
    dose_unit: str
    form_unit: str
    route: str
    atc4: str
    note_names: tuple[str, ...]
    frequency: str
    drug_type: str = "MAIN"
    home_med: bool = True
    # Extra ATC-4 classes the RxNorm-to-ATC file lists for this product (after the first).
    extra_atc4: tuple[str, ...] = ()
    # Base solutions in MIMIC carry NDC "0"; the mapping files never cover them.
    ndc_zero: bool = False


DRUGS: tuple[Drug, ...] = (
    # Cardiovascular
    Drug("metoprolol_tartrate", "Metoprolol Tartrate", "Metoprolol Tartrate", "METO25", "25mg Tablet", 25, ("12.5", "25", "50", "75"), "mg", "TAB", "PO", "C07AB", ("metoprolol", "lopressor"), "BID"),
    Drug("metoprolol_succinate", "Metoprolol Succinate XL", "Metoprolol Succinate", "METS50", "50mg Tablet", 50, ("25", "50", "100"), "mg", "TAB", "PO", "C07AB", ("metoprolol succinate", "toprol xl"), "DAILY"),
    Drug("carvedilol", "Carvedilol", "Carvedilol", "CARV625", "6.25mg Tablet", 6.25, ("3.125", "6.25", "12.5", "25"), "mg", "TAB", "PO", "C07AG", ("carvedilol", "coreg"), "BID"),
    Drug("labetalol", "Labetalol", "Labetalol HCl", "LABE20I", "20mg/4mL Vial", 20, ("10", "20"), "mg", "VIAL", "IV", "C07AG", ("labetalol",), "Q6H PRN", home_med=False),
    Drug("lisinopril", "Lisinopril", "Lisinopril", "LISI10", "10mg Tablet", 10, ("2.5", "5", "10", "20", "40"), "mg", "TAB", "PO", "C09AA", ("lisinopril",), "DAILY"),
    Drug("losartan", "Losartan Potassium", "Losartan Potassium", "LOSA50", "50mg Tablet", 50, ("25", "50", "100"), "mg", "TAB", "PO", "C09CA", ("losartan", "cozaar"), "DAILY"),
    Drug("amlodipine", "Amlodipine", "Amlodipine Besylate", "AMLO5", "5mg Tablet", 5, ("2.5", "5", "10"), "mg", "TAB", "PO", "C08CA", ("amlodipine", "norvasc"), "DAILY"),
    Drug("diltiazem", "Diltiazem", "Diltiazem", "DILT30", "30mg Tablet", 30, ("30", "60"), "mg", "TAB", "PO", "C08DB", ("diltiazem", "cardizem"), "QID"),
    Drug("hydrochlorothiazide", "Hydrochlorothiazide", "Hydrochlorothiazide", "HCTZ25", "25mg Tablet", 25, ("12.5", "25"), "mg", "TAB", "PO", "C03AA", ("hydrochlorothiazide", "HCTZ"), "DAILY"),
    Drug("furosemide", "Furosemide", "Furosemide", "FURO20", "20mg Tablet", 20, ("20", "40", "80"), "mg", "TAB", "PO", "C03CA", ("furosemide", "lasix"), "DAILY"),
    Drug("furosemide_iv", "Furosemide", "Furosemide", "FURO40I", "40mg/4mL Vial", 40, ("20", "40", "80", "100"), "mg", "VIAL", "IV", "C03CA", ("IV lasix", "IV furosemide"), "BID", home_med=False),
    Drug("spironolactone", "Spironolactone", "Spironolactone", "SPIR25", "25mg Tablet", 25, ("25", "50", "100"), "mg", "TAB", "PO", "C03DA", ("spironolactone", "aldactone"), "DAILY"),
    Drug("digoxin", "Digoxin", "Digoxin", "DIGO125", "125mcg Tablet", 0.125, ("0.125", "0.25"), "mg", "TAB", "PO", "C01AA", ("digoxin",), "DAILY"),
    Drug("amiodarone", "Amiodarone HCl", "Amiodarone HCl", "AMIO200", "200mg Tablet", 200, ("200", "400"), "mg", "TAB", "PO", "C01BD", ("amiodarone",), "DAILY"),
    Drug("warfarin", "Warfarin", "Warfarin", "WARF5", "5mg Tablet", 5, ("1", "2", "2.5", "5", "7.5"), "mg", "TAB", "PO", "B01AA", ("warfarin", "coumadin"), "DAILY (at 4pm)"),
    Drug("heparin_sc", "Heparin", "Heparin Sodium", "HEPA5I", "5000 Units / mL- 1mL Vial", 5000, ("5000",), "UNIT", "mL", "SC", "B01AB", ("heparin SC", "subcutaneous heparin"), "TID", home_med=False),
    Drug("heparin_iv", "Heparin", "Heparin Sodium", "HEPAPREM", "25,000 unit Premix Bag", 0, ("25000",), "UNIT", "BAG", "IV DRIP", "B01AB", ("heparin drip", "IV heparin"), "ASDIR", home_med=False),
    Drug("enoxaparin", "Enoxaparin Sodium", "Enoxaparin Sodium", "ENOX40I", "40mg / 0.4mL Syringe", 40, ("30", "40", "60", "80"), "mg", "SYR", "SC", "B01AB", ("enoxaparin", "lovenox"), "Q12H"),
    Drug("aspirin", "Aspirin", "Aspirin", "ASA81", "81mg Tablet", 81, ("81", "325"), "mg", "TAB", "PO", "B01AC", ("aspirin", "ASA"), "DAILY", extra_atc4=("N02BA",)),
    Drug("clopidogrel", "Clopidogrel Bisulfate", "Clopidogrel Bisulfate", "CLOP75", "75mg Tablet", 75, ("75", "300", "600"), "mg", "TAB", "PO", "B01AC", ("clopidogrel", "plavix"), "DAILY"),
    Drug("cilostazol", "Cilostazol", "Cilostazol", "CILO100", "100mg Tablet", 100, ("50", "100"), "mg", "TAB", "PO", "B01AC", ("cilostazol",), "BID"),
    Drug("atorvastatin", "Atorvastatin", "Atorvastatin Calcium", "ATOR10", "10mg Tablet", 10, ("10", "20", "40", "80"), "mg", "TAB", "PO", "C10AA", ("atorvastatin", "lipitor"), "DAILY"),
    Drug("simvastatin", "Simvastatin", "Simvastatin", "SIMV20", "20mg Tablet", 20, ("10", "20", "40"), "mg", "TAB", "PO", "C10AA", ("simvastatin", "zocor"), "DAILY"),
    Drug("nitroglycerin", "Nitroglycerin SL", "Nitroglycerin", "NTG3SL", "0.3mg SL Tablet", 0.3, ("0.3", "0.4"), "mg", "TAB", "SL", "C01DA", ("nitroglycerin", "SL nitro"), "PRN"),
    Drug("isosorbide_mononitrate", "Isosorbide Mononitrate (Extended Release)", "Isosorbide Mononitrate", "ISMN30ER", "30mg Tablet", 30, ("30", "60"), "mg", "TAB", "PO", "C01DA", ("isosorbide mononitrate", "imdur"), "DAILY"),
    Drug("norepinephrine", "NORepinephrine", "Norepinephrine Bitartrate", "NORE4I", "4mg Vial", 0, ("0.03", "0.06", "0.1", "0.03-0.25"), "mcg/kg/min", "VIAL", "IV DRIP", "C01CA", ("levophed", "norepinephrine"), "TITRATE", home_med=False),
    # Diabetes, endocrine, metabolic
    Drug("insulin_regular", "Insulin", "Insulin Regular Human", "INSULIN", "100 Units / mL - 10 mL Vial", 0, ("0",), "UNIT", "VIAL", "SC", "A10AB", ("insulin sliding scale", "ISS", "regular insulin"), "ASDIR", home_med=False),
    Drug("insulin_glargine", "Glargine", "Insulin Glargine", "GLAR100I", "100 Units / mL - 10mL Vial", 0, ("10", "15", "20", "30", "40"), "UNIT", "VIAL", "SC", "A10AE", ("glargine", "lantus"), "QHS"),
    Drug("metformin", "MetFORMIN (Glucophage)", "Metformin HCl", "METF500", "500mg Tablet", 500, ("500", "850", "1000"), "mg", "TAB", "PO", "A10BA", ("metformin", "glucophage"), "BID"),
    Drug("glipizide", "Glipizide", "Glipizide", "GLIP5", "5mg Tablet", 5, ("2.5", "5", "10"), "mg", "TAB", "PO", "A10BB", ("glipizide",), "DAILY"),
    Drug("levothyroxine", "Levothyroxine Sodium", "Levothyroxine Sodium", "LEVO50", "50mcg Tablet", 50, ("25", "50", "75", "88", "100", "125"), "mcg", "TAB", "PO", "H03AA", ("levothyroxine", "synthroid"), "DAILY"),
    Drug("allopurinol", "Allopurinol", "Allopurinol", "ALLO100", "100mg Tablet", 100, ("100", "300"), "mg", "TAB", "PO", "M04AA", ("allopurinol",), "DAILY"),
    Drug("colchicine", "Colchicine", "Colchicine", "COLC6", "0.6mg Tablet", 0.6, ("0.6",), "mg", "TAB", "PO", "M04AC", ("colchicine",), "DAILY"),
    Drug("alendronate", "Alendronate Sodium", "Alendronate Sodium", "ALEN70", "70mg Tablet", 70, ("70",), "mg", "TAB", "PO", "M05BA", ("alendronate", "fosamax"), "QWEEK"),
    # Renal
    Drug("sevelamer", "Sevelamer CARBONATE", "Sevelamer Carbonate", "SEVE800", "800mg Tablet", 800, ("800", "1600"), "mg", "TAB", "PO", "V03AE", ("sevelamer", "renvela"), "TID W/MEALS"),
    Drug("calcitriol", "Calcitriol", "Calcitriol", "CALC25", "0.25mcg Capsule", 0.25, ("0.25", "0.5"), "mcg", "CAP", "PO", "A11CC", ("calcitriol",), "DAILY"),
    Drug("epoetin", "Epoetin Alfa", "Epoetin Alfa", "EPO10I", "10,000 unit/mL Vial", 10000, ("4000", "10000"), "UNIT", "VIAL", "SC", "B03XA", ("epoetin", "epogen", "EPO"), "QMOWEFR", home_med=False),
    # Respiratory
    Drug("albuterol_neb", "Albuterol 0.083% Neb Soln", "Albuterol Sulfate", "ALBU3H", "2.5mg/3mL Neb", 1, ("1",), "NEB", "NEB", "IH", "R03AC", ("albuterol nebs", "albuterol"), "Q6H PRN"),
    Drug("ipratropium_neb", "Ipratropium Bromide Neb", "Ipratropium Bromide", "IPRA2H", "0.02% Neb", 1, ("1",), "NEB", "NEB", "IH", "R03BB", ("ipratropium", "atrovent"), "Q6H"),
    Drug("tiotropium", "Tiotropium Bromide", "Tiotropium Bromide", "TIOT18", "18mcg Capsule", 1, ("1",), "CAP", "CAP", "IH", "R03BB", ("tiotropium", "spiriva"), "DAILY"),
    Drug("fluticasone_salmeterol", "Fluticasone-Salmeterol (250/50) ", "Fluticasone-Salmeterol", "ADVA250", "250/50 Diskus", 1, ("1",), "INH", "DISK", "IH", "R03AK", ("fluticasone-salmeterol", "advair"), "BID"),
    Drug("montelukast", "Montelukast Sodium", "Montelukast Sodium", "MONT10", "10mg Tablet", 10, ("10",), "mg", "TAB", "PO", "R03DC", ("montelukast", "singulair"), "DAILY"),
    Drug("prednisone", "PredniSONE", "Prednisone", "PRED10", "10mg Tablet", 10, ("5", "10", "20", "40", "60"), "mg", "TAB", "PO", "H02AB", ("prednisone",), "DAILY", extra_atc4=("A07EA",)),
    Drug("methylprednisolone", "Methylprednisolone Na Succ", "Methylprednisolone Sodium Succ", "METH125I", "125mg Vial", 125, ("40", "60", "125"), "mg", "VIAL", "IV", "H02AB", ("solumedrol", "IV methylprednisolone"), "Q8H", home_med=False),
    # Liver, GI
    Drug("lactulose", "Lactulose", "Lactulose", "LACT30L", "30 mL Udcup", 30, ("15", "30"), "mL", "UDCUP", "PO", "A06AD", ("lactulose",), "TID"),
    Drug("rifaximin", "Rifaximin", "Rifaximin", "RIFA550", "550mg Tablet", 550, ("550",), "mg", "TAB", "PO", "A07AA", ("rifaximin", "xifaxan"), "BID"),
    Drug("nadolol", "Nadolol", "Nadolol", "NADO20", "20mg Tablet", 20, ("20", "40"), "mg", "TAB", "PO", "C07AA", ("nadolol",), "DAILY"),
    Drug("propranolol", "Propranolol", "Propranolol HCl", "PROP10", "10mg Tablet", 10, ("10", "20"), "mg", "TAB", "PO", "C07AA", ("propranolol",), "BID"),
    Drug("octreotide", "Octreotide Acetate", "Octreotide Acetate", "OCTR50I", "50mcg/mL Vial", 50, ("50", "100"), "mcg", "VIAL", "IV", "H01CB", ("octreotide",), "Q1H", home_med=False),
    Drug("pantoprazole", "Pantoprazole", "Pantoprazole Sodium", "PANT40", "40mg Tablet", 40, ("40",), "mg", "TAB", "PO", "A02BC", ("pantoprazole", "protonix"), "Q24H"),
    Drug("pantoprazole_iv", "Pantoprazole Sodium", "Pantoprazole Sodium", "PANT40I", "40mg Vial", 40, ("40", "80"), "mg", "VIAL", "IV", "A02BC", ("IV pantoprazole", "IV PPI"), "Q12H", home_med=False),
    Drug("omeprazole", "Omeprazole", "Omeprazole", "OMEP20", "20mg Capsule DR", 20, ("20", "40"), "mg", "CAP", "PO", "A02BC", ("omeprazole", "prilosec"), "DAILY"),
    Drug("famotidine", "Famotidine", "Famotidine", "FAMO20", "20mg Tablet", 20, ("20",), "mg", "TAB", "PO", "A02BA", ("famotidine", "pepcid"), "BID"),
    Drug("docusate", "Docusate Sodium", "Docusate Sodium", "DOCU100", "100mg Capsule", 100, ("100",), "mg", "CAP", "PO", "A06AA", ("colace", "docusate"), "BID"),
    Drug("senna", "Senna", "Sennosides", "SENN187", "8.6 mg Tablet", 1, ("1", "2"), "TAB", "TAB", "PO", "A06AB", ("senna",), "BID PRN"),
    Drug("bisacodyl", "Bisacodyl", "Bisacodyl", "BISA10R", "10mg Suppository", 10, ("10",), "mg", "SUPP", "PR", "A06AB", ("bisacodyl", "dulcolax"), "DAILY PRN"),
    Drug("ondansetron", "Ondansetron", "Ondansetron HCl", "ONDA2I", "2mg/mL-2mL", 2, ("4", "8"), "mg", "VIAL", "IV", "A04AA", ("ondansetron", "zofran"), "Q8H PRN"),
    Drug("prochlorperazine", "Prochlorperazine", "Prochlorperazine Maleate", "PROC10", "10mg Tablet", 10, ("5", "10"), "mg", "TAB", "PO", "N05AB", ("prochlorperazine", "compazine"), "Q6H PRN"),
    # Alcohol use, nutrition
    Drug("thiamine", "Thiamine", "Thiamine HCl", "THIA100", "100mg Tablet", 100, ("100",), "mg", "TAB", "PO", "A11DA", ("thiamine",), "DAILY"),
    Drug("folic_acid", "FoLIC Acid", "Folic Acid", "FOLI1", "1mg Tablet", 1, ("1",), "mg", "TAB", "PO", "B03BB", ("folic acid", "folate"), "DAILY"),
    Drug("multivitamin", "Multivitamins", "Multivitamins", "MVI", "Tablet", 1, ("1",), "TAB", "TAB", "PO", "A11BA", ("multivitamin", "MVI"), "DAILY"),
    Drug("ferrous_sulfate", "Ferrous Sulfate", "Ferrous Sulfate", "FERR325", "325mg Tablet", 325, ("325",), "mg", "TAB", "PO", "B03AA", ("ferrous sulfate", "iron"), "DAILY"),
    Drug("lorazepam", "Lorazepam", "Lorazepam", "LORA1", "1mg Tablet", 1, ("0.5", "1", "2"), "mg", "TAB", "PO", "N05BA", ("lorazepam", "ativan"), "Q4H PRN"),
    Drug("diazepam", "Diazepam", "Diazepam", "DIAZ5", "5mg Tablet", 5, ("5", "10", "20"), "mg", "TAB", "PO", "N05BA", ("diazepam", "valium"), "Q2H PRN", home_med=False),
    Drug("nicotine_patch", "Nicotine Patch", "Nicotine", "NICO14T", "14 mg/24 hr Patch", 14, ("14", "21"), "mg", "PTCH", "TP", "N07BA", ("nicotine patch",), "DAILY"),
    Drug("methadone", "Methadone", "Methadone HCl", "METH10", "10mg Tablet", 10, ("10", "30", "60", "80"), "mg", "TAB", "PO", "N07BC", ("methadone",), "DAILY"),
    Drug("naloxone", "Naloxone", "Naloxone HCl", "NALO4I", "0.4mg/1mL Vial", 0.4, ("0.4",), "mg", "VIAL", "IV", "V03AB", ("naloxone", "narcan"), "ONCE", home_med=False),
    # Psychiatric, neurologic
    Drug("sertraline", "Sertraline", "Sertraline HCl", "SERT50", "50mg Tablet", 50, ("25", "50", "100"), "mg", "TAB", "PO", "N06AB", ("sertraline", "zoloft"), "DAILY"),
    Drug("citalopram", "Citalopram Hydrobromide", "Citalopram Hydrobromide", "CITA20", "20mg Tablet", 20, ("10", "20", "40"), "mg", "TAB", "PO", "N06AB", ("citalopram", "celexa"), "DAILY"),
    Drug("trazodone", "Trazodone", "Trazodone HCl", "TRAZ50", "50mg Tablet", 50, ("25", "50", "100"), "mg", "TAB", "PO", "N06AX", ("trazodone",), "HS PRN"),
    Drug("quetiapine", "Quetiapine Fumarate", "Quetiapine Fumarate", "QUET25", "25mg Tablet", 25, ("12.5", "25", "50"), "mg", "TAB", "PO", "N05AH", ("quetiapine", "seroquel"), "QHS"),
    Drug("haloperidol", "Haloperidol", "Haloperidol", "HALO5I", "5mg/mL Vial", 5, ("0.5", "1", "2"), "mg", "VIAL", "IV", "N05AD", ("haloperidol", "haldol"), "Q6H PRN", home_med=False),
    Drug("donepezil", "Donepezil", "Donepezil HCl", "DONE5", "5mg Tablet", 5, ("5", "10"), "mg", "TAB", "PO", "N06DA", ("donepezil", "aricept"), "HS"),
    Drug("memantine", "Memantine", "Memantine HCl", "MEMA10", "10mg Tablet", 10, ("5", "10"), "mg", "TAB", "PO", "N06DX", ("memantine", "namenda"), "BID"),
    Drug("levetiracetam", "LeVETiracetam", "Levetiracetam", "LEVE500", "500mg Tablet", 500, ("500", "750", "1000"), "mg", "TAB", "PO", "N03AX", ("levetiracetam", "keppra"), "BID"),
    Drug("phenytoin", "Phenytoin Sodium Extended", "Phenytoin Sodium", "PHEN100", "100mg Capsule", 100, ("100", "300"), "mg", "CAP", "PO", "N03AB", ("phenytoin", "dilantin"), "TID"),
    Drug("gabapentin", "Gabapentin", "Gabapentin", "GABA300", "300mg Capsule", 300, ("100", "300", "600"), "mg", "CAP", "PO", "N03AX", ("gabapentin", "neurontin"), "TID"),
    Drug("zolpidem", "Zolpidem Tartrate", "Zolpidem Tartrate", "ZOLP5", "5mg Tablet", 5, ("5", "10"), "mg", "TAB", "PO", "N05CF", ("zolpidem", "ambien"), "HS PRN"),
    # Analgesia, sedation
    Drug("acetaminophen", "Acetaminophen", "Acetaminophen", "ACET325", "325mg Tablet", 325, ("325", "650", "1000"), "mg", "TAB", "PO", "N02BE", ("acetaminophen", "tylenol"), "Q6H PRN"),
    Drug("oxycodone", "OxycoDONE (Immediate Release) ", "Oxycodone HCl", "OXYC5", "5mg Tablet", 5, ("2.5", "5", "10"), "mg", "TAB", "PO", "N02AA", ("oxycodone",), "Q4H PRN"),
    Drug("morphine", "Morphine Sulfate", "Morphine Sulfate", "MORP2I", "2mg Syringe", 2, ("1", "2", "4"), "mg", "SYR", "IV", "N02AA", ("morphine",), "Q4H PRN", home_med=False),
    Drug("hydromorphone", "HYDROmorphone (Dilaudid)", "Hydromorphone HCl", "HYDR2I", "2mg/mL Syringe", 2, ("0.5", "1", "2"), "mg", "SYR", "IV", "N02AA", ("hydromorphone", "dilaudid"), "Q3H PRN", home_med=False),
    Drug("fentanyl", "Fentanyl Citrate", "Fentanyl Citrate", "FENT2I", "100mcg/2mL Amp", 100, ("25", "50", "100"), "mcg", "AMP", "IV", "N01AH", ("fentanyl",), "Q2H PRN", home_med=False),
    Drug("propofol", "Propofol", "Propofol", "PROP100IG", "1000mg/100mL Vial", 0, ("10", "20", "30", "5-50"), "mcg/kg/min", "VIAL", "IV DRIP", "N01AX", ("propofol",), "TITRATE", home_med=False),
    Drug("midazolam", "Midazolam", "Midazolam HCl", "MIDA2I", "2mg/2mL Vial", 2, ("1", "2"), "mg", "VIAL", "IV", "N05CD", ("midazolam", "versed"), "Q2H PRN", home_med=False),
    # Anti-infectives
    Drug("vancomycin", "Vancomycin", "Vancomycin HCl", "VANC1F", "1g Frozen Bag", 1000, ("750", "1000", "1250", "1500"), "mg", "BAG", "IV", "J01XA", ("vancomycin", "vanc"), "Q12H", home_med=False),
    Drug("vancomycin_oral", "Vancomycin Oral Liquid", "Vancomycin HCl", "VANCOR", "125mg/2.5mL", 125, ("125",), "mg", "UDCUP", "PO", "A07AA", ("PO vancomycin", "oral vancomycin"), "Q6H"),
    Drug("piperacillin_tazobactam", "Piperacillin-Tazobactam Na", "Piperacillin-Tazobactam Na", "PIPT45F", "4.5 g Frozen Bag", 4.5, ("2.25", "3.375", "4.5"), "g", "BAG", "IV", "J01CR", ("zosyn", "piperacillin-tazobactam"), "Q8H", home_med=False),
    Drug("cefepime", "CefePIME", "Cefepime HCl", "CEFE2I", "2 g Vial", 2, ("1", "2"), "g", "VIAL", "IV", "J01DE", ("cefepime",), "Q12H", home_med=False),
    Drug("ceftriaxone", "CeftriaXONE", "Ceftriaxone Sodium", "CEFT1F", "1 g Frozen Bag", 1, ("1", "2"), "g", "BAG", "IV", "J01DD", ("ceftriaxone",), "Q24H", home_med=False),
    Drug("cefazolin", "CeFAZolin", "Cefazolin Sodium", "CEFA1F", "1 g Frozen Bag", 1, ("1", "2"), "g", "BAG", "IV", "J01DB", ("cefazolin", "ancef"), "Q8H", home_med=False),
    Drug("meropenem", "Meropenem", "Meropenem", "MERO1I", "1 g Vial", 1000, ("500", "1000"), "mg", "VIAL", "IV", "J01DH", ("meropenem",), "Q8H", home_med=False),
    Drug("azithromycin", "Azithromycin", "Azithromycin", "AZIT250", "250 mg Tab", 250, ("250", "500"), "mg", "TAB", "PO", "J01FA", ("azithromycin", "azithro"), "Q24H"),
    Drug("levofloxacin", "Levofloxacin", "Levofloxacin", "LEVO750", "750mg Tablet", 750, ("250", "500", "750"), "mg", "TAB", "PO", "J01MA", ("levofloxacin", "levaquin"), "Q24H"),
    Drug("ciprofloxacin", "Ciprofloxacin HCl", "Ciprofloxacin HCl", "CIPR500", "500mg Tablet", 500, ("250", "500"), "mg", "TAB", "PO", "J01MA", ("ciprofloxacin", "cipro"), "Q12H"),
    Drug("metronidazole", "MetRONIDAZOLE (FLagyl)", "Metronidazole", "METR500", "500 mg Tab", 500, ("500",), "mg", "TAB", "PO", "J01XD", ("metronidazole", "flagyl"), "Q8H"),
    Drug("nitrofurantoin", "Nitrofurantoin Monohyd (MacroBID)", "Nitrofurantoin", "NITR100", "100mg Capsule", 100, ("100",), "mg", "CAP", "PO", "J01XE", ("nitrofurantoin", "macrobid"), "Q12H"),
    Drug("sulfamethoxazole_trimethoprim", "Sulfameth/Trimethoprim DS", "Sulfamethoxazole-Trimethoprim", "SMX800", "800mg-160mg Tablet", 1, ("1",), "TAB", "TAB", "PO", "J01EE", ("bactrim", "TMP-SMX"), "BID"),
    Drug("emtricitabine_tenofovir", "Emtricitabine-Tenofovir (Truvada)", "Emtricitabine-Tenofovir", "TRUV", "200mg-300mg Tablet", 1, ("1",), "TAB", "TAB", "PO", "J05AR", ("truvada", "emtricitabine-tenofovir"), "DAILY"),
    Drug("ampicillin", "Ampicillin Sodium", "Ampicillin Sodium", "AMPI500I", "500mg Vial", 500, ("125", "250"), "mg", "VIAL", "IV", "J01CA", ("ampicillin",), "Q12H", home_med=False),
    Drug("gentamicin", "Gentamicin", "Gentamicin Sulfate", "GENT10I", "10mg/mL Vial", 10, ("4", "10"), "mg", "VIAL", "IV", "J01GB", ("gentamicin",), "Q24H", home_med=False),
    # Oncology
    Drug("dexamethasone", "Dexamethasone", "Dexamethasone", "DEXA4", "4mg Tablet", 4, ("2", "4", "8"), "mg", "TAB", "PO", "H02AB", ("dexamethasone", "decadron"), "Q6H", extra_atc4=("S01BA",)),
    Drug("carboplatin", "CARBOplatin", "Carboplatin", "CARB450I", "450mg/45mL Vial", 0, ("300", "450", "600"), "mg", "VIAL", "IV", "L01XA", ("carboplatin",), "ONCE", home_med=False),
    Drug("paclitaxel", "PACLitaxel", "Paclitaxel", "PACL300I", "300mg/50mL Vial", 0, ("135", "175", "200"), "mg", "VIAL", "IV", "L01CD", ("paclitaxel", "taxol"), "ONCE", home_med=False),
    # Urology, eyes, misc
    Drug("tamsulosin", "Tamsulosin", "Tamsulosin HCl", "TAMS4", "0.4mg Capsule", 0.4, ("0.4",), "mg", "CAP", "PO", "G04CA", ("tamsulosin", "flomax"), "HS"),
    Drug("finasteride", "Finasteride", "Finasteride", "FINA5", "5mg Tablet", 5, ("5",), "mg", "TAB", "PO", "G04CB", ("finasteride", "proscar"), "DAILY"),
    Drug("latanoprost", "Latanoprost 0.005% Ophth. Soln.", "Latanoprost", "LATA25O", "2.5mL Bottle", 1, ("1",), "DROP", "BTL", "BOTH EYES", "S01EE", ("latanoprost eye drops", "xalatan"), "HS"),
    # Electrolytes, fluids, blood products
    Drug("potassium_chloride", "Potassium Chloride", "Potassium Chloride", "KCL20", "20mEq Tab Sust.Rel.", 20, ("10", "20", "40"), "mEq", "TAB", "PO", "A12BA", ("potassium chloride", "KCl"), "ONCE"),
    Drug("potassium_chloride_additive", "Potassium Chloride", "Potassium Chloride", "KCLBASE2", "2 mEq / mL - 20 mL Vial", 2, ("20", "40"), "mEq", "mL", "IV", "A12BA", ("IV potassium",), "ONCE", drug_type="ADDITIVE", home_med=False),
    Drug("magnesium_sulfate", "Magnesium Sulfate", "Magnesium Sulfate", "MAG2PM", "2 g / 50 mL Premix Bag", 2, ("1", "2", "4"), "gm", "BAG", "IV", "A12CC", ("magnesium sulfate", "IV magnesium"), "ONCE", home_med=False),
    Drug("calcium_gluconate", "Calcium Gluconate", "Calcium Gluconate", "CALG1I", "1 g / 10 mL Vial", 1, ("1", "2"), "gm", "VIAL", "IV", "A12AA", ("calcium gluconate",), "ONCE", home_med=False),
    Drug("albumin", "Albumin 25% (12.5g / 50mL)", "Albumin Human", "ALBU25", "12.5 g / 50 mL Vial", 12.5, ("12.5", "25"), "gm", "VIAL", "IV", "B05AA", ("albumin",), "Q8H", home_med=False),
    Drug("sodium_chloride_flush", "Sodium Chloride 0.9%  Flush", "Sodium Chloride 0.9% Flush", "NACLFLUSH", "10 mL Syringe", 0, ("3", "10"), "mL", "SYR", "IV", "B05XA", ("saline flush",), "Q8H", home_med=False, ndc_zero=True),
    Drug("sodium_chloride_bag", "0.9% Sodium Chloride", "Sodium Chloride 0.9%", "NS1000", "1000mL Bag", 0, ("1000",), "mL", "BAG", "IV", "B05BB", ("normal saline", "NS", "IV fluids"), "ASDIR", drug_type="BASE", home_med=False, ndc_zero=True),
    Drug("dextrose_5_water", "D5W", "Dextrose 5%", "D5W250", "250mL Bag", 0, ("250",), "mL", "BAG", "IV", "B05BA", ("D5W",), "ASDIR", drug_type="BASE", home_med=False, ndc_zero=True),
    Drug("lactated_ringers", "Lactated Ringers", "Lactated Ringers", "LR1000", "1000mL Bag", 0, ("1000",), "mL", "BAG", "IV", "B05BB", ("lactated ringers", "LR"), "ASDIR", drug_type="BASE", home_med=False, ndc_zero=True),
    # Newborn
    Drug("phytonadione", "Phytonadione", "Phytonadione", "PHYT1I", "1mg/0.5mL Ampule", 1, ("0.5", "1"), "mg", "AMP", "IM", "B02BA", ("vitamin K", "phytonadione"), "ONCE", home_med=False),
    Drug("erythromycin_ophthalmic", "Erythromycin", "Erythromycin", "ERYT5O", "0.5% Ophth Oint", 1, ("1",), "APPL", "TUBE", "BOTH EYES", "S01AA", ("erythromycin eye ointment",), "ONCE", home_med=False),
    Drug("hepatitis_b_vaccine", "Hepatitis B Vaccine", "Hepatitis B Virus Vaccine", "HEPBV", "10mcg/0.5mL Syringe", 0.5, ("0.5",), "mL", "SYR", "IM", "J07BC", ("hepatitis B vaccine",), "ONCE", home_med=False),
    Drug("caffeine_citrate", "Caffeine Citrate", "Caffeine Citrate", "CAFF20L", "20mg/mL Oral Soln", 20, ("5", "10", "20"), "mg", "mL", "PO/NG", "N06BC", ("caffeine",), "Q24H", home_med=False),
)

DRUGS_BY_KEY: dict[str, Drug] = {drug.key: drug for drug in DRUGS}
