"""
@article{SanchezGarcia2021,
  title = {DeepEMhancer: a deep learning solution for cryo-EM volume post-processing},
  author = {Sanchez-Garcia, Ruben and Gomez-Blanco, Josue and Cuervo, Ana and Carazo, Jose Maria and Sorzano, Carlos Oscar S. and Vargas, Javier},
  journal = {Communications Biology},
  volume = {4},
  pages = {874},
  year = {2021},
  doi = {http://dx.doi.org/10.1038/s42003-021-02399-1}
}

@article{Rosenthal2003,
  title = {Optimal determination of particle orientation, absolute hand, and contrast loss in single-particle electron cryomicroscopy},
  author = {Rosenthal, Peter B. and Henderson, Richard},
  journal = {Journal of Molecular Biology},
  volume = {333},
  number = {4},
  pages = {721--745},
  year = {2003},
  doi = {http://dx.doi.org/10.1016/j.jmb.2003.07.013}
}

@article{Scheres2012,
  title = {Prevention of overfitting in cryo-EM structure determination},
  author = {Scheres, Sjors H. W. and Chen, Shaoxia},
  journal = {Nature Methods},
  volume = {9},
  pages = {853--854},
  year = {2012},
  doi = {http://dx.doi.org/10.1038/nmeth.2115}
}

@article{Chen2013,
  title = {High-resolution noise substitution to measure overfitting and validate resolution in 3D structure determination by single particle electron cryomicroscopy},
  author = {Chen, Shaoxia and McMullan, Greg and Faruqi, Abdul R. and Murshudov, Garib N. and Short, Judith M. and Scheres, Sjors H. W. and Henderson, Richard},
  journal = {Ultramicroscopy},
  volume = {135},
  pages = {24--35},
  year = {2013},
  doi = {http://dx.doi.org/10.1016/j.ultramic.2013.06.004}
}

@article{Wojdyr2022,
  title = {GEMMI: A library for structural biology},
  author = {Wojdyr, Marcin},
  journal = {Journal of Open Source Software},
  volume = {7},
  number = {73},
  pages = {4200},
  year = {2022},
  doi = {http://dx.doi.org/10.21105/joss.04200}
}
"""
